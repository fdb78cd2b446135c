package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// needRoot skips tests that unpack layers: those make device nodes, chown
// files and set trusted xattrs.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers needs root")
	}
}

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

var testTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

// entry is one file of a hand-made layer tar.
type entry struct {
	hdr  tar.Header
	body string
}

func mkdir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: testTime}}
}

func file(name, body string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: testTime}, body: body}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: testTime}}
}

func devHeader(name string, major, minor int64) tar.Header {
	return tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: testTime}
}

func (e entry) owner(uid, gid int) entry { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }

func (e entry) xattr(k, v string) entry {
	if e.hdr.PAXRecords == nil {
		e.hdr.PAXRecords = map[string]string{}
	}
	e.hdr.PAXRecords[paxXattrPrefix+k] = v
	e.hdr.Format = tar.FormatPAX
	return e
}

// layerTar writes entries as an uncompressed layer tar.
func layerTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf builds an image from layer tars, bottom first.
func imageOf(t *testing.T, cfg v1.Config, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, b := range layers {
		var err error
		if img, err = mutate.AppendLayers(img, layerOf(t, b)); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerArchive writes images as `docker save` would, each under its tags.
func dockerArchive(t *testing.T, images map[string]v1.Image) []byte {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, img := range images {
		ref, err := name.ParseReference(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// archiveFile is one member of a hand-made archive.
type archiveFile struct {
	name, body, link string
}

// tarFiles makes a tar of files (and symlinks, when link is set).
func tarFiles(t *testing.T, files ...archiveFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}
		if f.link != "" {
			hdr = &tar.Header{Typeflag: tar.TypeSymlink, Name: f.name, Linkname: f.link, Mode: 0o777}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// handMadeArchive is a docker-archive with uncompressed layers stored as
// Docker 25 does (blobs/sha256/...), built without go-containerregistry so
// that a test can lie in it. diffIDs overrides the config's diffIDs.
func handMadeArchive(t *testing.T, tags []string, layers [][]byte, diffIDs []string) []byte {
	t.Helper()
	var files []archiveFile
	var paths []string
	for i, l := range layers {
		p := "blobs/sha256/" + digestOf(l)[7:]
		files = append(files, archiveFile{name: p, body: string(l)})
		paths = append(paths, p)
		if diffIDs == nil || i >= len(diffIDs) {
			diffIDs = append(diffIDs, digestOf(l))
		}
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cfgPath := "blobs/sha256/" + digestOf(cfg)[7:]
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgPath, "RepoTags": tags, "Layers": paths}})
	files = append([]archiveFile{{name: "manifest.json", body: string(manifest)}, {name: cfgPath, body: string(cfg)}}, files...)
	return tarFiles(t, files...)
}

// tree lists every path under dir (relative, sorted as WalkDir visits).
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustEmpty(t *testing.T, dir string) {
	t.Helper()
	if got := tree(t, dir); len(got) != 0 {
		t.Errorf("%s should be empty; has %v", dir, got)
	}
}
