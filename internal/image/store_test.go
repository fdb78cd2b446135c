package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// Two layers: the upper deletes etc/a with a whiteout, makes opq opaque, and
// adds a file to tmp without describing tmp itself.
func twoLayers(t *testing.T) (lower, upper []byte) {
	lower = layerTar(t,
		mkdir("etc/", 0o755), file("etc/a", "A", 0o644), file("etc/b", "B", 0o644),
		mkdir("opq/", 0o755), file("opq/x", "x", 0o644), file("opq/y", "y", 0o644),
		mkdir("bin/", 0o755), file("bin/su", "su", 0o4755), hardlink("bin/hard", "bin/su"), symlink("bin/sh", "/bin/su"),
		mkdir("home/", 0o755), mkdir("home/user/", 0o700).owner(1000, 1000), file("home/user/f", "f", 0o600).owner(1000, 1001),
		mkdir("dev/", 0o755), entry{hdr: devHeader("dev/null", 1, 3)},
		file("etc/tagged", "t", 0o644).xattr("user.moorage", "hello"),
		mkdir("tmp/", 0o1777),
	)
	upper = layerTar(t,
		mkdir("etc/", 0o755), file("etc/.wh.a", "", 0o644), file("etc/c", "C", 0o644),
		mkdir("opq/", 0o755), file("opq/.wh..wh..opq", "", 0o644), file("opq/z", "z", 0o644),
		file("tmp/new", "n", 0o644),
	)
	return lower, upper
}

var appConfig = v1.Config{
	Entrypoint:   []string{"/bin/app"},
	Cmd:          []string{"--serve"},
	Env:          []string{"PATH=/bin"},
	WorkingDir:   "/srv",
	User:         "1000:1000",
	ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
	Labels:       map[string]string{"team": "storage"},
}

func TestImportDockerArchiveWithTwoTags(t *testing.T) {
	needRoot(t)
	s, _ := openStore(t)
	lower, upper := twoLayers(t)
	img := imageOf(t, appConfig, lower, upper)
	archive := dockerArchive(t, map[string]v1.Image{"example.com/team/app:v1": img, "app": img})

	got, err := s.Import(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, g := range got {
		refs = append(refs, g.Ref)
	}
	slices.Sort(refs)
	if want := []string{"docker.io/library/app:latest", "example.com/team/app:v1"}; !slices.Equal(refs, want) {
		t.Fatalf("imported %v, want %v", refs, want)
	}
	id, _ := img.ConfigName()
	for _, ref := range []string{"app", "docker.io/library/app:latest", "example.com/team/app:v1", id.String(), "example.com/team/app@" + id.String()} {
		g, err := s.Get(ref)
		if err != nil {
			t.Fatalf("Get(%q): %v", ref, err)
		}
		if g.ID != id.String() || len(g.Layers) != 2 {
			t.Fatalf("Get(%q) = %+v", ref, g)
		}
	}
	g, _ := s.Get("app")
	want := Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv",
		User: "1000:1000", ExposedPorts: []string{"53/udp", "8080/tcp"}, Labels: map[string]string{"team": "storage"}}
	if !configEqual(g.Config, want) {
		t.Errorf("config %+v, want %+v", g.Config, want)
	}
	if g.Size != int64(len("ABxysuftCzn")) {
		t.Errorf("size %d", g.Size)
	}
	if _, err := s.Get("app@sha256:" + strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of another digest: %v", err)
	}
	if _, err := s.Get("other.example/app@" + id.String()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the digest under another repository: %v", err)
	}

	top, bottom := g.Layers[0], g.Layers[1]
	checkWhiteout(t, filepath.Join(top, "etc/a"))
	if v := xattr(t, filepath.Join(top, "opq"), opaqueXattr); v != "y" {
		t.Errorf("opq in the upper layer has %s=%q", opaqueXattr, v)
	}
	if _, err := os.Lstat(filepath.Join(bottom, "etc/a")); err != nil {
		t.Errorf("the lower layer lost etc/a: %v", err)
	}
	checkMerged(t, mountOverlay(t, g.Layers))
}

func configEqual(a, b Config) bool {
	return slices.Equal(a.Entrypoint, b.Entrypoint) && slices.Equal(a.Cmd, b.Cmd) && slices.Equal(a.Env, b.Env) &&
		a.WorkingDir == b.WorkingDir && a.User == b.User && slices.Equal(a.ExposedPorts, b.ExposedPorts) &&
		len(a.Labels) == len(b.Labels) && a.Labels["team"] == b.Labels["team"]
}

func checkWhiteout(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("whiteout %s: %v", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("%s is mode %o rdev %d; want a 0/0 character device", p, st.Mode, st.Rdev)
	}
}

func xattr(t *testing.T, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// mountOverlay mounts layers (top first) read-only and returns the mount
// point; the test's cleanup unmounts it.
func mountOverlay(t *testing.T, layers []string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(layers, ":")); err != nil {
		t.Fatalf("mounting overlay of %v: %v", layers, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// checkMerged checks the view a container of twoLayers gets.
func checkMerged(t *testing.T, root string) {
	t.Helper()
	ls := func(d string) []string {
		entries, err := os.ReadDir(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	if got := ls("etc"); !slices.Equal(got, []string{"b", "c", "tagged"}) {
		t.Errorf("etc = %v; want a deleted by the whiteout", got)
	}
	if got := ls("opq"); !slices.Equal(got, []string{"z"}) {
		t.Errorf("opq = %v; want only z (opaque)", got)
	}
	if got := ls("tmp"); !slices.Equal(got, []string{"new"}) {
		t.Errorf("tmp = %v", got)
	}
	stat := func(p string) unix.Stat_t {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stat("tmp"); st.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o; the upper layer must keep the lower's 1777", st.Mode&0o7777)
	}
	if st := stat("bin/su"); st.Mode&0o7777 != 0o4755 || st.Nlink != 2 {
		t.Errorf("bin/su mode %o nlink %d; want setuid 4755 and a hard link", st.Mode&0o7777, st.Nlink)
	}
	if st := stat("home/user"); st.Uid != 1000 || st.Gid != 1000 || st.Mode&0o777 != 0o700 {
		t.Errorf("home/user %d:%d %o", st.Uid, st.Gid, st.Mode&0o777)
	}
	if st := stat("home/user/f"); st.Uid != 1000 || st.Gid != 1001 || st.Mtim.Sec != testTime.Unix() {
		t.Errorf("home/user/f %d:%d mtime %d", st.Uid, st.Gid, st.Mtim.Sec)
	}
	if st := stat("etc"); st.Mtim.Sec != testTime.Unix() {
		t.Errorf("etc mtime %d, want the tar's", st.Mtim.Sec)
	}
	if st := stat("dev/null"); st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null mode %o rdev %d", st.Mode, st.Rdev)
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "/bin/su" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if v := xattr(t, filepath.Join(root, "etc/tagged"), "user.moorage"); v != "hello" {
		t.Errorf("etc/tagged xattr %q", v)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/c")); err != nil || string(b) != "C" {
		t.Errorf("etc/c = %q, %v", b, err)
	}
}

func TestImportHandMadeDockerArchive(t *testing.T) {
	needRoot(t)
	s, dir := openStore(t)
	l := layerTar(t, mkdir("srv/", 0o755), file("srv/index.html", "hi", 0o644))
	archive := handMadeArchive(t, []string{"nginx:1.25", "localhost:5000/web"}, [][]byte{l}, nil)

	imgs, err := s.Import(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Ref != "docker.io/library/nginx:1.25" || imgs[1].Ref != "localhost:5000/web:latest" {
		t.Fatalf("imported %+v", imgs)
	}
	if want := filepath.Join(dir, "layers", digestOf(l)[7:]); !slices.Equal(imgs[0].Layers, []string{want}) {
		t.Errorf("layers %v, want [%s]", imgs[0].Layers, want)
	}
	if b, err := os.ReadFile(filepath.Join(imgs[0].Layers[0], "srv/index.html")); err != nil || string(b) != "hi" {
		t.Errorf("index.html = %q, %v", b, err)
	}
	mustEmpty(t, filepath.Join(dir, "tmp"))
}

func TestImportCorruptArchives(t *testing.T) {
	needRoot(t)
	good := layerTar(t, file("a", "a", 0o644))
	archive := handMadeArchive(t, []string{"x"}, [][]byte{good}, nil)
	cases := []struct {
		name, archive, want string
	}{
		{"not a tar", "this is not an image", "not a tar archive"},
		{"empty", "", "empty"},
		{"no manifest", string(tarFiles(t, archiveFile{name: "hello.txt", body: "hi"})), "neither manifest.json"},
		{"bad manifest", string(tarFiles(t, archiveFile{name: "manifest.json", body: "{"})), "manifest.json"},
		{"missing layer", string(tarFiles(t, archiveFile{name: "manifest.json", body: `[{"Config":"c.json","Layers":["nope.tar"]}]`}, archiveFile{name: "c.json", body: "{}"})), "does not contain"},
		{"truncated", string(archive[:len(archive)/2]), "truncated"},
		{"wrong diffID", string(handMadeArchive(t, []string{"x"}, [][]byte{good}, []string{digestOf([]byte("other"))})), "corrupt"},
		{"windows", string(windowsArchive(t)), "linux images only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, dir := openStore(t)
			_, err := s.Import(strings.NewReader(c.archive))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Import: %v; want an error about %q", err, c.want)
			}
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Errorf("stored %v", imgs)
			}
			mustEmpty(t, filepath.Join(dir, "layers"))
			mustEmpty(t, filepath.Join(dir, "tmp"))
		})
	}
}

func windowsArchive(t *testing.T) []byte {
	img := imageOf(t, v1.Config{}, layerTar(t, file("a", "a", 0o644)))
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS = "windows"
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return dockerArchive(t, map[string]v1.Image{"win": img})
}

func TestAddHost(t *testing.T) {
	s, dir := openStore(t)
	cfg := Config{Cmd: []string{"/usr/sbin/nginx", "-g", "daemon off;"}, ExposedPorts: []string{"80/tcp"}}
	img, err := s.AddHost("nginx", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != "docker.io/library/nginx:latest" || !slices.Equal(img.Layers, []string{"/"}) || !strings.HasPrefix(img.ID, "sha256:") {
		t.Fatalf("AddHost = %+v", img)
	}
	mysql, err := s.AddHost("mysql:5.7", Config{Cmd: []string{"/usr/sbin/mariadbd"}})
	if err != nil {
		t.Fatal(err)
	}
	if mysql.ID == img.ID {
		t.Error("two host images share an ID")
	}
	again, _ := s.AddHost("docker.io/library/nginx:latest", cfg)
	if again.ID != img.ID {
		t.Errorf("re-adding changed the ID: %s -> %s", img.ID, again.ID)
	}
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Get("nginx:latest")
	if err != nil || got.ID != img.ID || !slices.Equal(got.Config.Cmd, cfg.Cmd) || !slices.Equal(got.Layers, []string{"/"}) {
		t.Fatalf("after reopening: %+v, %v", got, err)
	}
	changed, _ := s2.AddHost("nginx", Config{Cmd: []string{"/usr/sbin/nginx"}})
	if changed.ID == img.ID {
		t.Error("a new config kept the ID")
	}
	if imgs, _ := s2.List(); len(imgs) != 2 {
		t.Errorf("the replaced host image lingers: %+v", imgs)
	}
	if _, err := s2.AddHost("nginx@sha256:"+strings.Repeat("a", 64), cfg); err == nil {
		t.Error("a host image by digest was accepted")
	}
	if err := s2.Remove("mysql:5.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get("mysql:5.7"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
}

func TestGetMissingSaysWhatToDo(t *testing.T) {
	s, _ := openStore(t)
	_, err := s.Get("nginx")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	want := `image "docker.io/library/nginx:latest" is not present on this node: import it with "moorage image import FILE" or name a host program with "moorage image host ..."`
	if err.Error() != want {
		t.Errorf("err = %s", err)
	}
	if _, err := s.Get("Not Valid"); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Errorf("Get of an invalid reference: %v", err)
	}
	if err := s.Remove("nginx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of a missing image: %v", err)
	}
}

func TestRemoveFreesUnsharedLayers(t *testing.T) {
	needRoot(t)
	s, dir := openStore(t)
	base := layerTar(t, mkdir("usr/", 0o755), file("usr/base", "base", 0o644))
	a := layerTar(t, file("a", "a", 0o644))
	b := layerTar(t, file("b", "b", 0o644))
	imgA, imgB := imageOf(t, v1.Config{Cmd: []string{"a"}}, base, a), imageOf(t, v1.Config{Cmd: []string{"b"}}, base, b)
	if _, err := s.Import(bytes.NewReader(dockerArchive(t, map[string]v1.Image{"app-a:1": imgA, "app-a:2": imgA, "app-b": imgB}))); err != nil {
		t.Fatal(err)
	}
	layer := func(l []byte) string { return filepath.Join(dir, "layers", digestOf(l)[7:]) }
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	if !exists(layer(base)) || !exists(layer(a)) || !exists(layer(b)) {
		t.Fatalf("layers after import: %v", tree(t, filepath.Join(dir, "layers"))[:3])
	}

	if err := s.Remove("app-a:1"); err != nil {
		t.Fatal(err)
	}
	if !exists(layer(a)) {
		t.Fatal("untagging app-a:1 deleted a layer app-a:2 still uses")
	}
	if err := s.Remove("app-a:2"); err != nil {
		t.Fatal(err)
	}
	if exists(layer(a)) || !exists(layer(base)) || !exists(layer(b)) {
		t.Errorf("after removing a: a=%v base=%v b=%v; want only a gone", exists(layer(a)), exists(layer(base)), exists(layer(b)))
	}
	if _, err := s.Get("app-b"); err != nil {
		t.Fatal(err)
	}
	idB, _ := imgB.ConfigName()
	if err := s.Remove(idB.String()); err != nil {
		t.Fatal(err)
	}
	mustEmpty(t, filepath.Join(dir, "layers"))
	mustEmpty(t, filepath.Join(dir, "tmp"))
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("List = %+v", imgs)
	}
}

func TestReopenKeepsImagesAndSweepsLeftovers(t *testing.T) {
	needRoot(t)
	s, dir := openStore(t)
	l := layerTar(t, file("a", "a", 0o644))
	if _, err := s.Import(bytes.NewReader(handMadeArchive(t, []string{"keep"}, [][]byte{l}, nil))); err != nil {
		t.Fatal(err)
	}
	other, err := Open(dir) // stores are shared: a second Open works
	if err != nil {
		t.Fatalf("a second Open of a store in use: %v", err)
	}
	if _, err := other.Get("keep"); err != nil {
		t.Fatalf("Get from the second Store: %v", err)
	}
	other.Close()
	s.Close()
	// What a crash mid-import leaves: a half-unpacked layer in tmp/ and a
	// renamed layer the index never got to mention.
	orphan := filepath.Join(dir, "layers", strings.Repeat("ab", 32))
	for _, d := range []string{filepath.Join(dir, "tmp", "layer-123", "etc"), orphan} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	mustEmpty(t, filepath.Join(dir, "tmp"))
	if _, err := os.Lstat(orphan); err == nil {
		t.Error("orphan layer survived Open")
	}
	if img, err := s2.Get("keep"); err != nil || len(img.Layers) != 1 {
		t.Fatalf("Get after reopen: %+v, %v", img, err)
	}
}

func TestDamagedIndexIsReported(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open = %v", err)
	}
}

func TestConcurrentImportsAndReads(t *testing.T) {
	needRoot(t)
	s, dir := openStore(t)
	base := layerTar(t, file("base", "base", 0o644))
	var archives [][]byte
	for _, name := range []string{"one", "two", "three", "four"} {
		archives = append(archives, handMadeArchive(t, []string{name}, [][]byte{base, layerTar(t, file(name, name, 0o644))}, nil))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, a := range archives {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.Import(bytes.NewReader(a)); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := s.List(); err != nil {
					errs <- err
				}
				if _, err := s.Get("one"); err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if imgs, _ := s.List(); len(imgs) != 4 {
		t.Errorf("List = %d images", len(imgs))
	}
	if n := len(tree(t, filepath.Join(dir, "layers"))); n != 5+5 { // 5 layer dirs, each with one file
		t.Errorf("layers dir has %d entries: %v", n, tree(t, filepath.Join(dir, "layers")))
	}
}
