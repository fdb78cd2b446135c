// Package image is the node's image store: the images pods may run, each
// unpacked so that a container's root file system is an overlayfs mount of
// its layers.
//
// Design. Images arrive three ways: Import reads a `docker save` archive or
// an OCI image-layout tarball, Pull fetches one from a registry, and AddHost
// names the host's own "/" as an image (a host-installed program standing in
// for, say, nginx). Every layer is unpacked once into a directory named by
// its diffID (the sha256 of its uncompressed tar), shared by all images that
// contain it, in overlayfs's own format: whiteouts are 0/0 character devices
// and opaque directories carry trusted.overlay.opaque=y. An image's Layers
// are therefore ready to pass, top first, as overlay lowerdirs. Per-layer
// directories rather than one flattened tree per image because images share
// base layers: a second image on the same base costs only its own layers,
// both on disk and at import.
//
// On disk, under the directory given to Open:
//
//	index.json         references -> image ID -> layers and config
//	layers/<hex>/      one unpacked layer, <hex> its diffID
//	tmp/<work>/        one import or pull in progress, flocked by its process
//	lock               flocked by every change to index.json and layers/
//
// Sharing. Several processes may open one store at once: the node agent
// gets and pulls images while "moorage image import" and friends change
// them. Every change (Import, Pull, AddHost, Remove) takes an exclusive
// flock on lock, re-reads index.json under it, and writes the new index
// before letting go, so no process loses another's change. The long part of
// an import, unpacking, happens outside that lock in the import's own work
// directory; only moving the finished layers into layers/ and writing the
// index that names them happen under it, in one step. Get and List take no
// lock: index.json is only ever replaced whole, so they re-read it when a
// stat says it is not the file they read last. See lock.go.
//
// Crash safety: layers are unpacked under tmp/, synced and renamed into
// layers/ only when the whole import has succeeded, together with writing
// index.json, which is replaced atomically. A crash leaves either the old
// index or the new one. Work directories whose flock nobody holds, and layer
// directories that no image references and no live import has pinned, are
// deleted by the next Open or Remove, under the exclusive lock.
//
// A Store is safe for concurrent use. A Store's imports and pulls run one
// at a time (as the kubelet pulls by default); Get and List never wait for
// them, AddHost and Remove at most for the short step that commits one.
// Importing and removing need root: layers hold files
// of every owner, device nodes and trusted xattrs.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/fsutil"
)

// ErrNotFound is matched (errors.Is) by the error of Get and Remove when the
// image is not in the store.
var ErrNotFound = errors.New("image not found")

// Image is one stored image under one reference.
type Image struct {
	// Ref is the normalized reference the image was asked for or listed
	// under; for an image no tag points to, its ID. Get(Ref) finds it.
	Ref string
	// ID is the digest of the image's config; for host images a stable
	// digest of the name and config.
	ID string
	// Layers are directories to mount as overlay lower dirs, top layer
	// first; exactly []string{"/"} for host images; empty for an image
	// without layers. Never modify them. Passed as one "lowerdir=" option
	// they fit a mount's 4 KiB option page up to about 40 layers; the
	// mount API's "lowerdir+" (Linux 6.8) takes them one at a time.
	Layers []string
	Config Config
	// Size is the bytes of file content in the layers (0 for host images).
	Size int64
}

// Config is what an image says about running it.
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"` // "80/tcp", sorted
	Labels       map[string]string `json:"labels,omitempty"`
}

// Store is an image store on disk. Any number of Stores, in one process or
// several, may be open on the same directory.
type Store struct {
	dir       string
	transport *http.Transport // to registries, shared by pulls

	pullMu sync.Mutex // one import or pull at a time

	mu sync.Mutex
	// idx is index.json as last read or written (nil: read it). idxFile is
	// that file, kept open so that its inode number cannot be reused by a
	// later index.json, and idxStamp what a stat of it said.
	idx      *index
	idxFile  *os.File
	idxStamp fileStamp
}

// index is index.json. Records are never mutated in place: a change builds
// a new index and swaps it in once it is on disk.
type index struct {
	Version int                     `json:"version"`
	Images  map[string]*imageRecord `json:"images"` // by image ID
	Refs    map[string]string       `json:"refs"`   // normalized reference -> image ID
}

type imageRecord struct {
	Host    bool          `json:"host,omitempty"`
	Layers  []layerRecord `json:"layers,omitempty"`  // bottom first
	Digests []string      `json:"digests,omitempty"` // manifest (and index) digests it was fetched or imported as
	Config  Config        `json:"config"`
}

type layerRecord struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

const indexVersion = 1

// Open opens the store in dir, creating it if needed. It deletes what an
// interrupted import or removal left behind, sparing what other processes
// using the store are still working on.
func Open(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "layers"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	s := &Store{dir: dir, transport: newRegistryTransport()}
	if err := s.sweep(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the Store's resources. The Store must not be used
// afterwards; other Stores on the directory are not affected.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idxFile != nil {
		s.idxFile.Close()
	}
	s.idx, s.idxFile = nil, nil
	return nil
}

func (s *Store) indexPath() string { return filepath.Join(s.dir, "index.json") }
func (s *Store) tmpDir() string    { return filepath.Join(s.dir, "tmp") }

// layerDir is where the layer with this diffID ("sha256:<hex>") lives.
func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.dir, "layers", strings.TrimPrefix(diffID, "sha256:"))
}

func emptyIndex() *index {
	return &index{Version: indexVersion, Images: map[string]*imageRecord{}, Refs: map[string]string{}}
}

// fileStamp identifies one version of index.json. As the Store keeps the
// file it read open, a replacement always has another inode number; size
// and times also catch a file edited in place.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func stampOf(st *unix.Stat_t) fileStamp {
	return fileStamp{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// current returns the index as it is on disk, re-reading index.json only
// when it is no longer the file read last: some Store replaced it.
func (s *Store) current() (*index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshLocked(false)
}

// reload re-reads index.json unconditionally. Changes call it under the
// exclusive store lock, so that they build on every other change.
func (s *Store) reload() (*index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshLocked(true)
}

// refreshLocked brings idx up to date with the disk. Callers hold mu.
func (s *Store) refreshLocked(force bool) (*index, error) {
	var st unix.Stat_t
	err := unix.Stat(s.indexPath(), &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		if force || s.idx == nil || s.idxFile != nil {
			s.setIndexLocked(emptyIndex(), nil, fileStamp{})
		}
		return s.idx, nil
	case err != nil:
		return nil, fmt.Errorf("image store index: %w", err)
	case !force && s.idx != nil && s.idxFile != nil && stampOf(&st) == s.idxStamp:
		return s.idx, nil
	}
	// Read what is there now, through one open file, so that the stamp
	// kept is that of the content read.
	f, err := os.Open(s.indexPath())
	if errors.Is(err, fs.ErrNotExist) { // replaced or removed since the stat
		return s.refreshLocked(true)
	}
	if err != nil {
		return nil, fmt.Errorf("image store index: %w", err)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store index: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image store index: %w", err)
	}
	idx, err := s.parse(b)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.setIndexLocked(idx, f, stampOf(&st))
	return idx, nil
}

func (s *Store) setIndexLocked(idx *index, f *os.File, stamp fileStamp) {
	if s.idxFile != nil {
		s.idxFile.Close()
	}
	s.idx, s.idxFile, s.idxStamp = idx, f, stamp
}

func (s *Store) parse(b []byte) (*index, error) {
	idx := &index{}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("image store index %s is damaged (%v): move it away to start an empty store", s.indexPath(), err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("image store index %s has version %d; this moorage reads version %d", s.indexPath(), idx.Version, indexVersion)
	}
	if idx.Images == nil {
		idx.Images = map[string]*imageRecord{}
	}
	if idx.Refs == nil {
		idx.Refs = map[string]string{}
	}
	return idx, nil
}

func (x *index) clone() *index {
	c := &index{Version: x.Version, Images: make(map[string]*imageRecord, len(x.Images)), Refs: make(map[string]string, len(x.Refs))}
	for k, v := range x.Images {
		c.Images[k] = v
	}
	for k, v := range x.Refs {
		c.Refs[k] = v
	}
	return c
}

func (x *index) layersInUse() map[string]bool {
	used := map[string]bool{}
	for _, rec := range x.Images {
		for _, l := range rec.Layers {
			used[l.DiffID] = true
		}
	}
	return used
}

// refsTo returns the references pointing to image id, sorted.
func (x *index) refsTo(id string) []string {
	var refs []string
	for r, target := range x.Refs {
		if target == id {
			refs = append(refs, r)
		}
	}
	sort.Strings(refs)
	return refs
}

// save writes next as index.json and makes it the Store's index. Callers
// hold the exclusive store lock.
func (s *Store) save(next *index) error {
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(s.indexPath(), b, 0o600); err != nil {
		return fmt.Errorf("writing image store index: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Under the lock the file there is the one just written.
	var st unix.Stat_t
	f, err := os.Open(s.indexPath())
	if err == nil {
		if err = unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
		}
	}
	if err != nil {
		s.setIndexLocked(nil, nil, fileStamp{}) // read it back when next needed
		return nil
	}
	s.setIndexLocked(next, f, stampOf(&st))
	return nil
}

// notPresentError is what Get and Remove say about a missing image.
type notPresentError struct{ ref string }

func (e *notPresentError) Error() string {
	return fmt.Sprintf("image %q is not present on this node: import it with \"moorage image import FILE\" or name a host program with \"moorage image host ...\"", e.ref)
}

func (e *notPresentError) Is(target error) bool { return target == ErrNotFound }

// resolve finds the image a reference names.
//
// An ID names its image. A tag or a stored name@digest names what it points
// to. Any other name@digest matches an image stored under that repository
// whose ID or manifest digest is the digest.
func (x *index) resolve(p parsedRef) (string, bool) {
	if p.id != "" {
		_, ok := x.Images[p.id]
		return p.id, ok
	}
	if id, ok := x.Refs[p.full]; ok {
		return id, true
	}
	if p.digest == "" {
		return "", false
	}
	for r, id := range x.Refs {
		if repoOf(r) != p.repo {
			continue
		}
		if id == p.digest || slices.Contains(x.Images[id].Digests, p.digest) {
			return id, true
		}
	}
	return "", false
}

// image builds the Image for a record of idx.
func (s *Store) image(idx *index, ref, id string) Image {
	rec := idx.Images[id]
	img := Image{Ref: ref, ID: id, Config: rec.Config.clone()}
	if rec.Host {
		img.Layers = []string{"/"}
		return img
	}
	img.Layers = make([]string, 0, len(rec.Layers))
	for i := len(rec.Layers) - 1; i >= 0; i-- {
		img.Layers = append(img.Layers, s.layerDir(rec.Layers[i].DiffID))
		img.Size += rec.Layers[i].Size
	}
	return img
}

func (c Config) clone() Config {
	c.Entrypoint = slices.Clone(c.Entrypoint)
	c.Cmd = slices.Clone(c.Cmd)
	c.Env = slices.Clone(c.Env)
	c.ExposedPorts = slices.Clone(c.ExposedPorts)
	if c.Labels != nil {
		labels := make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			labels[k] = v
		}
		c.Labels = labels
	}
	return c
}

// Get returns the image ref names: a tag ("nginx", normalized as Docker
// does), name@digest, or an image ID. The error matches ErrNotFound when the
// node does not have it. It sees what other processes stored or removed.
func (s *Store) Get(ref string) (Image, error) {
	p, err := parseRef(ref)
	if err != nil {
		return Image{}, err
	}
	for attempt := 0; ; attempt++ {
		idx, err := s.current()
		if err != nil {
			return Image{}, err
		}
		id, ok := idx.resolve(p)
		if !ok {
			return Image{}, &notPresentError{ref: p.full}
		}
		img := s.image(idx, p.full, id)
		var missing error
		for _, dir := range img.Layers {
			if _, err := os.Stat(dir); err != nil {
				missing = fmt.Errorf("image %q is damaged (layer %s: %v): remove it and import it again", p.full, dir, err)
				break
			}
		}
		if missing == nil {
			return img, nil
		}
		// A layer is deleted only after an index no longer naming it is
		// written. If the index changed meanwhile, look again.
		if again, err := s.current(); err != nil || again == idx || attempt == 3 {
			return Image{}, missing
		}
	}
}

// List returns every image once per reference, sorted by Ref; an image no
// reference points to is listed under its ID.
func (s *Store) List() ([]Image, error) {
	idx, err := s.current()
	if err != nil {
		return nil, err
	}
	var out []Image
	referenced := map[string]bool{}
	for r, id := range idx.Refs {
		out = append(out, s.image(idx, r, id))
		referenced[id] = true
	}
	for id := range idx.Images {
		if !referenced[id] {
			out = append(out, s.image(idx, id, id))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// AddHost stores ref as a host image: its root file system is the host's
// "/" and cfg says what to run. ref must be a name with an optional tag
// ("nginx", "mysql:5.7"); adding it again replaces it.
func (s *Store) AddHost(ref string, cfg Config) (Image, error) {
	p, err := parseRef(ref)
	if err != nil {
		return Image{}, err
	}
	if p.id != "" || p.digest != "" {
		return Image{}, fmt.Errorf("a host image needs a name with an optional tag, like nginx or mysql:5.7, not %q", ref)
	}
	cfg = cfg.clone()
	sort.Strings(cfg.ExposedPorts)
	id, err := hostID(p.full, cfg)
	if err != nil {
		return Image{}, err
	}
	l, err := s.lockStore(unix.LOCK_EX)
	if err != nil {
		return Image{}, err
	}
	defer l.unlock()
	cur, err := s.reload()
	if err != nil {
		return Image{}, err
	}
	next := cur.clone()
	prev, had := next.Refs[p.full]
	next.Images[id] = &imageRecord{Host: true, Config: cfg}
	next.Refs[p.full] = id
	if had && prev != id && next.Images[prev].Host && len(next.refsTo(prev)) == 0 {
		delete(next.Images, prev) // a replaced host image holds no files
	}
	if err := s.save(next); err != nil {
		return Image{}, err
	}
	return s.image(next, p.full, id), nil
}

// hostID derives a host image's ID from its name and config, so that the
// same definition always has the same ID.
func hostID(ref string, cfg Config) (string, error) {
	b, err := json.Marshal(struct {
		Ref    string `json:"ref"`
		Config Config `json:"config"`
	}{ref, cfg})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte("moorage host image\n"), b...))
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Remove removes a reference. A tag (or a stored name@digest) is untagged,
// and the image goes when no reference is left; an ID, or a name@digest
// matched by content, removes the image with all its references. Layers no
// other image uses are deleted. The caller makes sure no container still
// runs on the image.
func (s *Store) Remove(ref string) error {
	p, err := parseRef(ref)
	if err != nil {
		return err
	}
	l, err := s.lockStore(unix.LOCK_EX)
	if err != nil {
		return err
	}
	cur, err := s.reload()
	if err != nil {
		l.unlock()
		return err
	}
	id, ok := cur.resolve(p)
	if !ok {
		l.unlock()
		return &notPresentError{ref: p.full}
	}
	next := cur.clone()
	if _, tagged := next.Refs[p.full]; tagged {
		delete(next.Refs, p.full)
	} else {
		for _, r := range next.refsTo(id) {
			delete(next.Refs, r)
		}
	}
	if len(next.refsTo(id)) == 0 {
		delete(next.Images, id)
	}
	if err := s.save(next); err != nil {
		l.unlock()
		return err
	}
	g, err := s.collectLocked(next)
	l.unlock()
	if derr := g.dispose(); err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("removed %q, but freeing its layers failed (the next start retries): %w", p.full, err)
	}
	return nil
}
