package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// Annotations of an OCI layout's index.json that name an image. The
// containerd one carries the full name in layouts written by containerd,
// BuildKit and Docker 25+, whose ref.name then holds only the tag.
const (
	refNameAnnotation        = "org.opencontainers.image.ref.name"
	containerdNameAnnotation = "io.containerd.image.name"
)

// Import reads an image archive from r and stores every image in it: either
// a `docker save` archive (manifest.json, configs and layer tars, names from
// RepoTags) or an OCI image layout (oci-layout, index.json, blobs/; names
// from the io.containerd.image.name or org.opencontainers.image.ref.name
// annotation; a bare tag there is refused, as it names no repository).
// Either may be gzip-compressed. It returns one Image per reference, and one
// under its ID for an image without a name. A tag that pointed to another
// image moves; that image stays, listed under its ID, until removed.
//
// An archive's parts can come in any order, so r is first unpacked under the
// store's tmp/ directory (needing about its size in free space) and deleted
// afterwards. On any error nothing is stored. Other processes using the
// store wait for the import only while it commits.
func (s *Store) Import(r io.Reader) ([]Image, error) {
	w, err := s.newWork("import-")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer w.remove()
	stage := filepath.Join(w.dir, "archive")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	root, err := unpackArchive(r, stage)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer root.Close()
	var srcs []*source
	switch {
	case fileExists(root, "manifest.json"):
		srcs, err = readDockerArchive(root)
	case fileExists(root, "index.json"):
		srcs, err = readOCILayout(stage)
	default:
		err = errors.New("not an image archive: it has neither manifest.json (docker save) nor index.json (OCI image layout)")
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	imgs, err := s.storeImages(w, srcs)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return imgs, nil
}

func fileExists(root *os.Root, name string) bool {
	fi, err := root.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// unpackArchive writes the files of the tar (or tar.gz) r under dir and
// returns dir opened as an os.Root, through which every later read goes, so
// that a symlink in the archive cannot lead outside it.
func unpackArchive(r io.Reader, dir string) (*os.Root, error) {
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("reading gzip archive: %w", err)
		}
		defer gz.Close()
		src = gz
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if err := unpackFiles(tar.NewReader(src), root); err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}

func unpackFiles(tr *tar.Reader, root *os.Root) error {
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF && n == 0 {
			return errors.New("the archive is empty")
		}
		if err == io.EOF {
			return nil
		}
		if err != nil && n == 0 {
			return fmt.Errorf("not a tar archive (want the output of docker save, or an OCI image layout as a tar): %w", err)
		}
		if err != nil {
			return fmt.Errorf("reading archive (truncated?): %w", err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return fmt.Errorf("archive entry: %w", err)
		}
		if name == "." {
			continue
		}
		if hdr.Typeflag != tar.TypeDir {
			if err := root.MkdirAll(path.Dir(name), 0o700); err != nil {
				return err
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, 0o700)
		case tar.TypeReg:
			err = copyToRoot(root, name, tr)
		case tar.TypeSymlink: // docker save links a layer shared by two images
			err = root.Symlink(hdr.Linkname, name)
		case tar.TypeLink:
			var target string
			if target, err = cleanName(hdr.Linkname); err == nil {
				err = root.Link(target, name)
			}
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("the archive is truncated: %w", err)
		}
		if err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
	}
}

func copyToRoot(root *os.Root, name string, r io.Reader) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// source is one image to store, whatever it came from.
type source struct {
	id      string // "sha256:" of rawConfig
	refs    []string
	digests []string
	config  Config
	layers  []sourceLayer // bottom first
}

type sourceLayer struct {
	diffID string // from the image config; the content is checked against it
	what   string // names the layer in messages
	open   func() (io.ReadCloser, error)
}

// name names the image in messages.
func (src *source) name() string {
	if len(src.refs) > 0 {
		return src.refs[0]
	}
	return src.id
}

// tagOnly matches a ref.name annotation that is evidently a bare tag
// ("latest", "1.25", "v2") rather than a name, which the OCI spec allows.
var tagOnly = regexp.MustCompile(`^(latest|v?[0-9][A-Za-z0-9_.-]*)$`)

var sha256Pattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// newSource checks an image's config against its layers and fills in what
// the store keeps of it.
func newSource(refs, digests []string, rawConfig []byte, layers []sourceLayer) (*source, error) {
	sum := sha256.Sum256(rawConfig)
	src := &source{id: "sha256:" + hex.EncodeToString(sum[:]), refs: refs, digests: digests, layers: layers}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("image %s: config is not valid: %w", src.name(), err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return nil, fmt.Errorf("image %s is for %s; this node runs linux images only", src.name(), cfg.OS)
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return nil, fmt.Errorf("image %s: config lists %d layers, the manifest %d", src.name(), len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if !sha256Pattern.MatchString(d.String()) {
			return nil, fmt.Errorf("image %s: layer %d has diffID %q; only sha256 is supported", src.name(), i, d)
		}
		src.layers[i].diffID = d.String()
	}
	c := cfg.Config
	src.config = Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels}
	for p := range c.ExposedPorts {
		src.config.ExposedPorts = append(src.config.ExposedPorts, p)
	}
	sort.Strings(src.config.ExposedPorts)
	return src, nil
}

// dockerManifest is one entry of a docker-archive manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func readDockerArchive(root *os.Root) ([]*source, error) {
	raw, err := root.ReadFile("manifest.json")
	if err != nil {
		return nil, err
	}
	var entries []dockerManifest
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("manifest.json is not a docker-archive manifest: %w", err)
	}
	if len(entries) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	var srcs []*source
	for _, e := range entries {
		var refs []string
		for _, tag := range e.RepoTags {
			ref, err := Normalize(tag)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
			refs = append(refs, ref)
		}
		config, err := root.ReadFile(e.Config)
		if err != nil {
			return nil, fmt.Errorf("manifest.json names config %q: %w", e.Config, err)
		}
		var layers []sourceLayer
		for _, p := range e.Layers {
			if !fileExists(root, p) {
				return nil, fmt.Errorf("manifest.json names layer %q, which the archive does not contain", p)
			}
			layers = append(layers, sourceLayer{what: p, open: func() (io.ReadCloser, error) {
				f, err := root.Open(p)
				if err != nil {
					return nil, err
				}
				return uncompressed(f)
			}})
		}
		src, err := newSource(refs, nil, config, layers)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// uncompressed returns the tar stream of a layer blob stored as tar,
// tar+gzip or tar+zstd, detected by its first bytes.
func uncompressed(blob io.ReadCloser) (io.ReadCloser, error) {
	l, err := partial.CompressedToLayer(blobLayer{blob})
	if err != nil {
		blob.Close()
		return nil, err
	}
	return l.Uncompressed()
}

// blobLayer is the minimum partial.CompressedToLayer needs to decompress a
// blob; only Compressed is ever called.
type blobLayer struct{ rc io.ReadCloser }

func (b blobLayer) Compressed() (io.ReadCloser, error) { return b.rc, nil }
func (b blobLayer) Digest() (v1.Hash, error)           { return v1.Hash{}, errors.ErrUnsupported }
func (b blobLayer) Size() (int64, error)               { return 0, errors.ErrUnsupported }
func (b blobLayer) MediaType() (types.MediaType, error) {
	return types.DockerLayer, nil
}

func readOCILayout(dir string) ([]*source, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("not an OCI image layout: %w", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout index.json: %w", err)
	}
	var srcs []*source
	for _, d := range im.Manifests {
		var refs []string
		name := d.Annotations[containerdNameAnnotation]
		if name == "" {
			name = d.Annotations[refNameAnnotation]
		}
		if name != "" && d.Annotations[containerdNameAnnotation] == "" && tagOnly.MatchString(name) {
			return nil, fmt.Errorf("index.json names image %s only by the tag %q: set its %s annotation to a full name such as example/app:%s", d.Digest, name, refNameAnnotation, name)
		}
		if name != "" {
			ref, err := Normalize(name)
			if err != nil {
				return nil, fmt.Errorf("index.json: %w", err)
			}
			refs = append(refs, ref)
		}
		digests := []string{d.Digest.String()}
		var img v1.Image
		switch {
		case d.MediaType.IsImage():
			img, err = idx.Image(d.Digest)
		case d.MediaType.IsIndex():
			var child v1.ImageIndex
			if child, err = idx.ImageIndex(d.Digest); err == nil {
				var dgst string
				img, dgst, err = platformImage(child)
				digests = append(digests, dgst)
			}
		default:
			continue // not an image (an attestation, say)
		}
		if err != nil {
			return nil, fmt.Errorf("OCI layout entry %s: %w", d.Digest, err)
		}
		src, err := sourceFromImage(img, refs, digests)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	if len(srcs) == 0 {
		return nil, errors.New("OCI layout index.json lists no images")
	}
	return srcs, nil
}

// platformImage picks this node's image (linux/GOARCH) from a multi-platform
// index and returns it with its manifest digest.
func platformImage(ii v1.ImageIndex) (v1.Image, string, error) {
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	var have []string
	for _, m := range im.Manifests {
		if m.Platform == nil || !m.MediaType.IsImage() {
			continue
		}
		if m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
			img, err := ii.Image(m.Digest)
			return img, m.Digest.String(), err
		}
		have = append(have, m.Platform.String())
	}
	return nil, "", fmt.Errorf("no image for linux/%s in the index (it has: %s)", runtime.GOARCH, strings.Join(have, ", "))
}

// sourceFromImage adapts a go-containerregistry image (from an OCI layout
// or a registry).
func sourceFromImage(img v1.Image, refs, digests []string) (*source, error) {
	what := strings.Join(refs, ", ")
	if what == "" {
		what = strings.Join(digests, ", ")
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", what, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", what, err)
	}
	if sum := sha256.Sum256(raw); m.Config.Digest.Hex != hex.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("image %s: config does not match its digest %s (corrupt)", what, m.Config.Digest)
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image %s: layers: %w", what, err)
	}
	var layers []sourceLayer
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("image %s: layer: %w", what, err)
		}
		layers = append(layers, sourceLayer{what: d.String(), open: l.Uncompressed})
	}
	return newSource(refs, digests, raw, layers)
}

// storeImages unpacks the layers the store lacks into w and commits the
// images. It is all or nothing: the layers move into layers/ in the same
// step, under the exclusive store lock, that writes the index naming them;
// until then no image is visible, and on error w (deleted by the caller)
// still holds them.
func (s *Store) storeImages(w *work, srcs []*source) ([]Image, error) {
	s.pullMu.Lock()
	defer s.pullMu.Unlock()

	var diffIDs []string
	for _, src := range srcs {
		for _, l := range src.layers {
			if !slices.Contains(diffIDs, l.diffID) {
				diffIDs = append(diffIDs, l.diffID)
			}
		}
	}
	present, idx, err := s.pin(w, diffIDs)
	if err != nil {
		return nil, err
	}
	u := &unpacker{s: s, w: w, idx: idx, present: present, dirs: map[string]string{}, sizes: map[string]int64{}}
	for _, src := range srcs {
		if err := u.unpackImage(src); err != nil {
			return nil, err
		}
	}
	if err := u.sync(); err != nil {
		return nil, err
	}

	l, err := s.lockStore(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	cur, err := s.reload()
	if err != nil {
		return nil, err
	}
	moved, err := u.publish()
	if err != nil {
		u.unpublish(moved)
		return nil, err
	}
	next := cur.clone()
	for _, src := range srcs {
		rec := &imageRecord{Config: src.config}
		if old := next.Images[src.id]; old != nil {
			rec.Digests = old.Digests
		}
		for _, d := range src.digests {
			if !slices.Contains(rec.Digests, d) {
				rec.Digests = append(rec.Digests, d)
			}
		}
		for _, l := range src.layers {
			rec.Layers = append(rec.Layers, layerRecord{DiffID: l.diffID, Size: u.sizes[l.diffID]})
		}
		next.Images[src.id] = rec
		for _, r := range src.refs {
			next.Refs[r] = src.id
		}
	}
	if err := s.save(next); err != nil {
		// The index may have been replaced all the same (a failed sync of
		// its directory): take back only the layers it does not name.
		if cur, rerr := s.reload(); rerr == nil {
			used := cur.layersInUse()
			u.unpublish(slices.DeleteFunc(moved, func(d string) bool { return used[d] }))
		}
		return nil, err
	}
	var out []Image
	for _, src := range srcs {
		for _, r := range src.refs {
			out = append(out, s.image(next, r, src.id))
		}
		if len(src.refs) == 0 {
			out = append(out, s.image(next, src.id, src.id))
		}
	}
	return out, nil
}
