package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// tarDir tars the directory dir, as `tar -C dir -c .` would.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(dir, p)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestImportOCILayout(t *testing.T) {
	needRoot(t)
	lower, upper := twoLayers(t)
	app := imageOf(t, appConfig, lower, upper)
	tool := imageOf(t, v1.Config{Cmd: []string{"tool"}}, layerTar(t, file("tool", "t", 0o755)))
	other := imageOf(t, v1.Config{Cmd: []string{"other-arch"}}, layerTar(t, file("x", "x", 0o755)))
	multi := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: tool, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)

	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(app, layout.WithAnnotations(map[string]string{refNameAnnotation: "registry.local:5000/team/app:v2"})); err != nil {
		t.Fatal(err)
	}
	// As BuildKit and Docker 25 write it: the tag in ref.name, the name in
	// io.containerd.image.name.
	if err := lp.AppendIndex(multi, layout.WithAnnotations(map[string]string{refNameAnnotation: "1.0", containerdNameAnnotation: "docker.io/library/tool:1.0"})); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarDir(t, dir))
	zw.Close()

	s, _ := openStore(t)
	imgs, err := s.Import(&gz)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, i := range imgs {
		refs = append(refs, i.Ref)
	}
	if want := []string{"registry.local:5000/team/app:v2", "docker.io/library/tool:1.0"}; !slices.Equal(refs, want) {
		t.Fatalf("imported %v, want %v", refs, want)
	}
	got, err := s.Get("registry.local:5000/team/app:v2")
	if err != nil {
		t.Fatal(err)
	}
	checkMerged(t, mountOverlay(t, got.Layers))

	manifestDigest, _ := app.Digest()
	if byDigest, err := s.Get("registry.local:5000/team/app@" + manifestDigest.String()); err != nil || byDigest.ID != got.ID {
		t.Errorf("Get by manifest digest: %+v, %v", byDigest, err)
	}
	toolImg, err := s.Get("tool:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(toolImg.Config.Cmd, []string{"tool"}) {
		t.Errorf("picked %v from the index; want this node's platform", toolImg.Config.Cmd)
	}
	indexDigest, _ := multi.Digest()
	if _, err := s.Get("tool@" + indexDigest.String()); err != nil {
		t.Errorf("Get by index digest: %v", err)
	}

	// A layout naming an image only by its tag is refused, not misnamed.
	bare := t.TempDir()
	lp2, err := layout.Write(bare, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp2.AppendImage(tool, layout.WithAnnotations(map[string]string{refNameAnnotation: "1.0"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(bytes.NewReader(tarDir(t, bare))); err == nil || !strings.Contains(err.Error(), "only by the tag") {
		t.Errorf("Import of a tag-only layout = %v", err)
	}
}
