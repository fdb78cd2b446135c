package image

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestUnsafeLayersAreRefused(t *testing.T) {
	needRoot(t)
	cases := []struct {
		name  string
		layer []entry
		want  string
	}{
		{"dot-dot", []entry{file("../evil", "x", 0o644)}, "leaves the layer root"},
		{"dot-dot inside", []entry{mkdir("a/", 0o755), file("a/../../evil", "x", 0o644)}, "leaves the layer root"},
		{"absolute dot-dot", []entry{file("/../evil", "x", 0o644)}, "leaves the layer root"},
		{"hard link out", []entry{hardlink("passwd", "../../../../etc/passwd")}, "leaves the layer root"},
		{"whiteout of dot-dot", []entry{mkdir("etc/", 0o755), file("etc/.wh..", "", 0o644)}, "invalid whiteout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, dir := openStore(t)
			archive := handMadeArchive(t, []string{"evil"}, [][]byte{layerTar(t, c.layer...)}, nil)
			_, err := s.Import(bytes.NewReader(archive))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Import = %v; want an error about %q", err, c.want)
			}
			mustEmpty(t, filepath.Join(dir, "layers"))
			mustEmpty(t, filepath.Join(dir, "tmp"))
			if _, err := os.Lstat(filepath.Join(dir, "evil")); err == nil {
				t.Error("a file escaped the layer")
			}
		})
	}
}

// Symlinks in a layer resolve inside it, as if the layer were "/": files
// written through them stay in the layer, whatever the link says.
func TestSymlinkedParentsStayInside(t *testing.T) {
	needRoot(t)
	outside := t.TempDir() // exists on the host, and below also in the layer
	var layer []entry
	for p := outside; p != "/"; p = filepath.Dir(p) {
		layer = append([]entry{mkdir(p+"/", 0o755)}, layer...)
	}
	layer = append(layer,
		symlink("abs", outside),
		file("abs/pwned", "x", 0o644),
		symlink("rel", strings.Repeat("../", 12)+strings.TrimPrefix(outside, "/")),
		file("rel/pwned2", "x", 0o644),
		mkdir("d/", 0o755),
		symlink("d/up", "../../../.."),
		file("d/up/pwned3", "x", 0o644),
		file("plain", "p", 0o644),
		hardlink("abs/hard", "plain"),
	)
	s, _ := openStore(t)
	imgs, err := s.Import(bytes.NewReader(handMadeArchive(t, []string{"links"}, [][]byte{layerTar(t, layer...)}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	mustEmpty(t, outside)
	root := imgs[0].Layers[0]
	inside := filepath.Join(root, outside)
	for _, f := range []string{"pwned", "pwned2", "hard"} {
		if _, err := os.Lstat(filepath.Join(inside, f)); err != nil {
			t.Errorf("%s should have landed in the layer at %s: %v", f, inside, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "pwned3")); err != nil {
		t.Errorf("pwned3 should be at the layer root: %v", err)
	}
	if target, _ := os.Readlink(filepath.Join(root, "abs")); target != outside {
		t.Errorf("the symlink itself is kept verbatim; got %q", target)
	}

	// A symlink to a directory the layer lacks: refused, nothing written.
	dangling := layerTar(t, symlink("abs", outside), file("abs/pwned", "x", 0o644))
	if _, err := s.Import(bytes.NewReader(handMadeArchive(t, []string{"dangling"}, [][]byte{dangling}, nil))); err == nil {
		t.Error("a file through a dangling symlink was accepted")
	}
	mustEmpty(t, outside)
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"a/b": "a/b", "./a/b/": "a/b", "/etc/passwd": "etc/passwd", "a/../b": "b", ".": ".", "./": ".", "//x//y": "x/y",
	} {
		if got, err := cleanName(in); err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"..", "../a", "a/../../b", "/../a"} {
		if got, err := cleanName(bad); err == nil {
			t.Errorf("cleanName(%q) = %q; want it refused", bad, got)
		}
	}
}

// A later entry replacing an earlier one, a directory listed twice, and a
// file in a directory the tar never lists.
func TestLayerReplacesEntries(t *testing.T) {
	needRoot(t)
	s, _ := openStore(t)
	layer := layerTar(t,
		file("x", "first", 0o644),
		file("x", "second", 0o600),
		mkdir("d/", 0o700),
		file("d/f", "f", 0o644),
		mkdir("d/", 0o751),
		mkdir("gone/", 0o755),
		file("gone/f", "f", 0o644),
		file("gone", "now a file", 0o644),
		file("deep/er/f", "f", 0o644),
	)
	imgs, err := s.Import(bytes.NewReader(handMadeArchive(t, []string{"replace"}, [][]byte{layer}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	root := imgs[0].Layers[0]
	if b, _ := os.ReadFile(filepath.Join(root, "x")); string(b) != "second" {
		t.Errorf("x = %q", b)
	}
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || fi.Mode().Perm() != 0o751 {
		t.Errorf("d: %v %v", fi.Mode(), err)
	}
	if got := tree(t, filepath.Join(root, "d")); !slices.Equal(got, []string{"f"}) {
		t.Errorf("d holds %v", got)
	}
	if fi, err := os.Lstat(filepath.Join(root, "gone")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("gone: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(root, "deep/er")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("deep/er: %v %v", fi.Mode(), err)
	}
}
