package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// unpacker brings the layers of one import onto disk: each layer the store
// lacks is unpacked into its own directory in the import's work directory
// and checked against its diffID; publish then moves them all into layers/.
type unpacker struct {
	s       *Store
	w       *work
	idx     *index            // the index when the layers were pinned
	present map[string]bool   // diffIDs pinned while in layers/
	dirs    map[string]string // diffID -> directory holding it (in layers/ or w)
	sizes   map[string]int64  // diffID -> bytes of content
	fresh   []string          // diffIDs unpacked by this import, in order
}

// unpackImage makes every layer of src available, bottom first, so that each
// can see the layers below it.
func (u *unpacker) unpackImage(src *source) error {
	var lowers []string // top first
	for i, l := range src.layers {
		dir, ok := u.dirs[l.diffID]
		if !ok {
			var err error
			if dir, err = u.layer(l, lowers); err != nil {
				return fmt.Errorf("image %s, layer %d of %d (%s): %w", src.name(), i+1, len(src.layers), l.what, err)
			}
		}
		lowers = append([]string{dir}, lowers...)
	}
	return nil
}

// layer returns the directory of layer l, unpacking it unless the store
// had it when pinned; pinned, it stays meanwhile.
func (u *unpacker) layer(l sourceLayer, lowers []string) (string, error) {
	if u.present[l.diffID] {
		final := u.s.layerDir(l.diffID)
		size, ok := u.idx.layerSize(l.diffID)
		if !ok {
			size = dirSize(final)
		}
		u.dirs[l.diffID], u.sizes[l.diffID] = final, size
		return final, nil
	}
	dir, err := os.MkdirTemp(u.w.dir, "layer-")
	if err != nil {
		return "", err
	}
	u.dirs[l.diffID] = dir
	u.fresh = append(u.fresh, l.diffID)
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	rc, err := l.open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	content := io.TeeReader(rc, h)
	size, err := unpackLayer(content, dir, lowers)
	if err != nil {
		return "", err
	}
	// The diffID covers the whole stream, padding after the tar's end too.
	if _, err := io.Copy(io.Discard, content); err != nil {
		return "", fmt.Errorf("reading layer: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.diffID {
		return "", fmt.Errorf("content has digest %s but the image config says %s: the archive is corrupt", got, l.diffID)
	}
	u.sizes[l.diffID] = size
	return dir, nil
}

// sync makes the unpacked layers durable, before any index may name them.
// It needs no lock: the layers are still private to the import.
func (u *unpacker) sync() error {
	if len(u.fresh) == 0 {
		return nil
	}
	fd, err := unix.Open(u.w.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("syncing unpacked layers: %w", err)
	}
	return nil
}

// publish moves the synced layers under their names in layers/ and returns
// the diffIDs it moved. A layer another import stored meanwhile is used as
// it is, and this import's copy deleted with its work directory. The caller
// holds the store lock exclusively and writes the index naming the layers
// before letting go of it.
func (u *unpacker) publish() ([]string, error) {
	var moved []string
	for _, diffID := range u.fresh {
		final := u.s.layerDir(diffID)
		_, err := os.Lstat(final)
		if err == nil {
			u.dirs[diffID] = final
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return moved, fmt.Errorf("storing layer %s: %w", diffID, err)
		}
		if err := os.Rename(u.dirs[diffID], final); err != nil {
			return moved, fmt.Errorf("storing layer %s: %w", diffID, err)
		}
		moved = append(moved, diffID)
		u.dirs[diffID] = final
	}
	for diffID := range u.present {
		if _, err := os.Lstat(u.s.layerDir(diffID)); err != nil {
			return moved, fmt.Errorf("layer %s left the store during the import: %w", diffID, err)
		}
	}
	if len(moved) == 0 {
		return nil, nil
	}
	return moved, syncDir(filepath.Dir(u.s.layerDir(moved[0])))
}

// unpublish moves layers publish moved back into the work directory, for
// an import that failed to commit. The caller holds the store lock
// exclusively; what it cannot move a later collection deletes.
func (u *unpacker) unpublish(diffIDs []string) {
	for _, diffID := range diffIDs {
		os.Rename(u.s.layerDir(diffID), filepath.Join(u.w.dir, "unpublished-"+strings.TrimPrefix(diffID, "sha256:")))
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// dirSize adds up the file content under dir; for a layer found on disk
// whose size no index record holds.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// layerSize returns the recorded size of a stored layer.
func (x *index) layerSize(diffID string) (int64, bool) {
	for _, rec := range x.Images {
		for _, l := range rec.Layers {
			if l.DiffID == diffID {
				return l.Size, true
			}
		}
	}
	return 0, false
}
