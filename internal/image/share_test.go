package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// openOn opens a further Store on dir, closed at the end of the test.
func openOn(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// soon runs f and fails the test if it does not return within 10 seconds:
// it must not be waiting for a lock that a stalled import holds.
func soon(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s is blocked by an import in progress", what)
	}
}

func refsOf(imgs []Image) []string {
	var refs []string
	for _, i := range imgs {
		refs = append(refs, i.Ref)
	}
	return refs
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestImportWhileAnotherStoreReads(t *testing.T) {
	needRoot(t)
	importer, dir := openStore(t)
	reader := openOn(t, dir)
	if _, err := reader.Get("web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before the import: %v", err)
	}
	if a, _ := reader.current(); a != reader.idx {
		t.Fatal("current did not cache the index")
	}

	l := layerTar(t, mkdir("srv/", 0o755), file("srv/index.html", "hi", 0o644))
	archive := handMadeArchive(t, []string{"web"}, [][]byte{l}, nil)
	pr, pw := io.Pipe()
	type result struct {
		imgs []Image
		err  error
	}
	done := make(chan result, 1)
	go func() {
		imgs, err := importer.Import(pr)
		done <- result{imgs, err}
	}()
	if _, err := pw.Write(archive[:len(archive)/2]); err != nil { // the import is now stuck reading
		t.Fatal(err)
	}

	// Meanwhile the other Store, and a third opened now, go on working.
	soon(t, "Get", func() error {
		if _, err := reader.Get("web"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("the image is visible before its import returned: %v", err)
		}
		return nil
	})
	soon(t, "AddHost", func() error { _, err := reader.AddHost("nginx", Config{Cmd: []string{"nginx"}}); return err })
	soon(t, "Open", func() error {
		s3, err := Open(dir)
		if err == nil {
			s3.Close()
		}
		return err
	})
	soon(t, "List", func() error {
		imgs, err := reader.List()
		if err == nil && !slices.Equal(refsOf(imgs), []string{"docker.io/library/nginx:latest"}) {
			err = fmt.Errorf("List = %v", refsOf(imgs))
		}
		return err
	})

	if _, err := pw.Write(archive[len(archive)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("Import (its work directory was swept away?): %v", r.err)
	}
	got, err := reader.Get("web")
	if err != nil {
		t.Fatalf("Get from the other Store after the import: %v", err)
	}
	if got.ID != r.imgs[0].ID || !slices.Equal(got.Layers, r.imgs[0].Layers) {
		t.Errorf("Get = %+v, Import = %+v", got, r.imgs[0])
	}
	if b, err := os.ReadFile(filepath.Join(got.Layers[0], "srv/index.html")); err != nil || string(b) != "hi" {
		t.Errorf("index.html = %q, %v", b, err)
	}
	imgs, _ := reader.List()
	if want := []string{"docker.io/library/nginx:latest", "docker.io/library/web:latest"}; !slices.Equal(refsOf(imgs), want) {
		t.Errorf("List = %v, want %v", refsOf(imgs), want)
	}
	// The importer kept the host image the other Store added meanwhile.
	if _, err := importer.Get("nginx"); err != nil {
		t.Errorf("the import lost the other Store's change: %v", err)
	}
	// Nothing changed since: the index is not read again.
	a, _ := reader.current()
	if b, _ := reader.current(); a != b {
		t.Error("an unchanged index.json was read again")
	}
	mustEmpty(t, filepath.Join(dir, "tmp"))
}

func TestConcurrentImportsFromTwoStores(t *testing.T) {
	needRoot(t)
	s1, dir := openStore(t)
	s2 := openOn(t, dir)
	base := layerTar(t, file("base", "base", 0o644)) // in every image, stored by neither yet
	names := []string{"one", "two", "three", "four", "five", "six"}
	var wg sync.WaitGroup
	errs := make(chan error, len(names)+2)
	for i, name := range names {
		s := []*Store{s1, s2}[i%2]
		archive := handMadeArchive(t, []string{name}, [][]byte{base, layerTar(t, file(name, name, 0o644))}, nil)
		wg.Go(func() {
			if _, err := s.Import(bytes.NewReader(archive)); err != nil {
				errs <- err
			}
		})
	}
	for i := range 2 {
		s := []*Store{s1, s2}[i]
		wg.Go(func() {
			for range 20 {
				if _, err := s.AddHost(fmt.Sprintf("host%d", i), Config{}); err != nil {
					errs <- err
				}
				if _, err := s.Get("one"); err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range []*Store{s1, s2} {
		imgs, err := s.List()
		if err != nil || len(imgs) != len(names)+2 {
			t.Errorf("List = %v, %v; want %d images", refsOf(imgs), err, len(names)+2)
		}
		for _, name := range names {
			img, err := s.Get(name)
			if err != nil || len(img.Layers) != 2 {
				t.Fatalf("Get(%s) = %+v, %v", name, img, err)
			}
		}
	}
	if n := len(tree(t, filepath.Join(dir, "layers"))); n != 2*(len(names)+1) { // each layer dir has one file
		t.Errorf("layers dir has %d entries: %v", n, tree(t, filepath.Join(dir, "layers")))
	}
	mustEmpty(t, filepath.Join(dir, "tmp"))
}

func TestRemoveSeenByAnotherStore(t *testing.T) {
	needRoot(t)
	s1, dir := openStore(t)
	s2 := openOn(t, dir)
	l := layerTar(t, file("a", "a", 0o644))
	if _, err := s1.Import(bytes.NewReader(handMadeArchive(t, []string{"app"}, [][]byte{l}, nil))); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.AddHost("nginx", Config{}); err != nil {
		t.Fatal(err)
	}
	img, err := s2.Get("app")
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Remove("app"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get("app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the other Store removed it: %v", err)
	}
	if imgs, _ := s2.List(); !slices.Equal(refsOf(imgs), []string{"docker.io/library/nginx:latest"}) {
		t.Errorf("List = %v", refsOf(imgs))
	}
	if exists(img.Layers[0]) {
		t.Error("the removed image's layer is still there")
	}
	if err := s2.Remove("nginx"); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Get("nginx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the other Store removed it: %v", err)
	}
	if err := s1.Remove("nginx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing it again: %v", err)
	}
}

// gatedSource is an image whose top layer cannot be read until gate is
// closed; opened is closed when the import asks for it.
func gatedSource(t *testing.T, ref string, layers [][]byte, gate, opened chan struct{}) *source {
	t.Helper()
	var diffIDs []string
	var sls []sourceLayer
	for i, l := range layers {
		diffIDs = append(diffIDs, digestOf(l))
		sls = append(sls, sourceLayer{what: fmt.Sprint("layer ", i), open: func() (io.ReadCloser, error) {
			if i == len(layers)-1 {
				close(opened)
				<-gate
			}
			return io.NopCloser(bytes.NewReader(l)), nil
		}})
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	full, err := Normalize(ref)
	if err != nil {
		t.Fatal(err)
	}
	src, err := newSource([]string{full}, nil, cfg, sls)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// An import relies on a layer the store has; another Store removing the
// only image using it meanwhile must not take it away.
func TestImportKeepsPinnedLayers(t *testing.T) {
	needRoot(t)
	s1, dir := openStore(t)
	s2 := openOn(t, dir)
	base := layerTar(t, file("base", "base", 0o644))
	top := layerTar(t, file("top", "top", 0o644))
	if _, err := s2.Import(bytes.NewReader(handMadeArchive(t, []string{"base"}, [][]byte{base}, nil))); err != nil {
		t.Fatal(err)
	}
	baseDir := filepath.Join(dir, "layers", digestOf(base)[7:])

	w, err := s1.newWork("import-")
	if err != nil {
		t.Fatal(err)
	}
	defer w.remove()
	gate, opened := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s1.storeImages(w, []*source{gatedSource(t, "app", [][]byte{base, top}, gate, opened)})
		done <- err
	}()
	<-opened // base is pinned and in use as the lower layer

	if err := s2.Remove("base"); err != nil {
		t.Fatal(err)
	}
	s3 := openOn(t, dir) // sweeps
	if !exists(baseDir) || !exists(w.dir) {
		t.Fatalf("collected what a live import uses: base layer %v, work dir %v", exists(baseDir), exists(w.dir))
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	img, err := s3.Get("app")
	if err != nil || len(img.Layers) != 2 || img.Layers[1] != baseDir {
		t.Fatalf("Get = %+v, %v", img, err)
	}
	w.remove() // unpins
	if err := s3.Remove("app"); err != nil {
		t.Fatal(err)
	}
	mustEmpty(t, filepath.Join(dir, "layers"))
	mustEmpty(t, filepath.Join(dir, "tmp"))
}

// A work directory nobody holds is a crash's leftover and goes; one a live
// import holds stays, with the unreferenced layers it pinned.
func TestSweepSparesLiveWork(t *testing.T) {
	s, dir := openStore(t)
	live, err := s.newWork("import-")
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()
	pinned, orphan := "sha256:"+strings.Repeat("ab", 32), "sha256:"+strings.Repeat("cd", 32)
	if err := os.WriteFile(filepath.Join(live.dir, pinsFile), []byte(pinned), 0o600); err != nil {
		t.Fatal(err)
	}
	crashed, err := s.newWork("import-")
	if err != nil {
		t.Fatal(err)
	}
	crashed.f.Close() // as the process's death does
	for _, d := range []string{filepath.Join(live.dir, "layer-1", "etc"), filepath.Join(crashed.dir, "layer-1", "etc"),
		filepath.Join(dir, "tmp", "layer-123"), s.layerDir(pinned), s.layerDir(orphan)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(crashed.dir, pinsFile), []byte(orphan), 0o600); err != nil {
		t.Fatal(err)
	}

	openOn(t, dir)
	if got := tree(t, filepath.Join(dir, "tmp")); !slices.Equal(got, []string{filepath.Base(live.dir), filepath.Join(filepath.Base(live.dir), "layer-1"),
		filepath.Join(filepath.Base(live.dir), "layer-1", "etc"), filepath.Join(filepath.Base(live.dir), pinsFile)}) {
		t.Errorf("tmp after the sweep: %v; want only the live import", got)
	}
	if !exists(s.layerDir(pinned)) || exists(s.layerDir(orphan)) {
		t.Errorf("pinned layer kept %v, orphan kept %v", exists(s.layerDir(pinned)), exists(s.layerDir(orphan)))
	}
	live.remove()
	openOn(t, dir)
	mustEmpty(t, filepath.Join(dir, "tmp"))
	mustEmpty(t, filepath.Join(dir, "layers"))
}

// The same with a real second process: its changes are seen, and the work
// directory it leaves by dying is cleaned up.
func TestAnotherProcess(t *testing.T) {
	if dir := os.Getenv("IMAGE_STORE_CHILD"); dir != "" {
		s, err := Open(dir)
		if err == nil {
			_, err = s.AddHost("child", Config{Cmd: []string{"child"}})
		}
		if err == nil {
			var w *work
			if w, err = s.newWork("import-"); err == nil {
				err = os.WriteFile(filepath.Join(w.dir, "half-done"), []byte("x"), 0o600)
			}
		}
		if err != nil {
			os.Stdout.WriteString(err.Error())
			os.Exit(3)
		}
		os.Exit(0) // without cleaning up, as a crash would
	}
	s, dir := openStore(t)
	if _, err := s.Get("child"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAnotherProcess$")
	cmd.Env = append(os.Environ(), "IMAGE_STORE_CHILD="+dir)
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("child: %v, %s", err, out)
	}
	if img, err := s.Get("child"); err != nil || !slices.Equal(img.Config.Cmd, []string{"child"}) {
		t.Fatalf("Get of the child's image: %+v, %v", img, err)
	}
	if len(tree(t, filepath.Join(dir, "tmp"))) == 0 {
		t.Fatal("the child left no work directory")
	}
	openOn(t, dir)
	mustEmpty(t, filepath.Join(dir, "tmp"))
}
