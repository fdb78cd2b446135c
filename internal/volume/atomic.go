package volume

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// The atomic writer keeps a volume's files in a hidden directory named
// after the time it was written (..2006_01_02_15_04_05.<random>), points
// the ..data symlink at it, and shows each top-level path as a symlink
// through ..data. A new payload goes into a new hidden directory; one
// rename of a fresh symlink over ..data switches every file at once; the
// old directory is removed afterwards. A reader that opened a file before
// the switch keeps reading the old contents. This is upstream's on-disk
// layout, which applications (and inotify-based reloaders) depend on.
const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
	tsDirLayout    = "..2006_01_02_15_04_05."
	maxFileNameLen = 255
	maxPathLen     = 4096
)

// fileProjection is one file of a payload.
type fileProjection struct {
	Data []byte
	Mode int32
	// FsUser, when set, owns the file (projected service account tokens).
	FsUser *int64
}

// writeAtomic makes dir hold exactly payload. With an fsGroup, the whole
// volume gets that group (read-only masks, as upstream) after the new
// files are written and before they become visible. It reports whether
// anything was written; an unchanged payload writes nothing.
func writeAtomic(dir string, payload map[string]fileProjection, fsGroup *int64) (bool, error) {
	clean := make(map[string]fileProjection, len(payload))
	for p, fp := range payload {
		if err := validatePayloadPath(p); err != nil {
			return false, err
		}
		clean[filepath.Clean(p)] = fp
	}

	oldTs, err := os.Readlink(filepath.Join(dir, dataDirName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	var oldPaths map[string]bool
	if oldTs != "" {
		if !isTsDirName(oldTs) {
			return false, fmt.Errorf("%s points at %q, which the atomic writer did not write", filepath.Join(dir, dataDirName), oldTs)
		}
		oldPaths, err = filesIn(filepath.Join(dir, oldTs))
		if err != nil {
			return false, err
		}
		same, err := sameContents(filepath.Join(dir, oldTs), clean, oldPaths, fsGroup != nil)
		if err != nil {
			return false, err
		}
		if same {
			// Up to date; still make sure the visible symlinks exist and
			// no half-written directory is left (a crash may have come
			// in the middle of a write).
			if err := createVisible(dir, clean); err != nil {
				return false, err
			}
			return false, removeStaleTsDirs(dir, oldTs)
		}
	}

	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format(tsDirLayout))
	if err != nil {
		return false, err
	}
	tsName := filepath.Base(tsDir)
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, err
	}
	if err := writePayload(tsDir, clean); err != nil {
		_ = os.RemoveAll(tsDir)
		return false, err
	}
	if fsGroup != nil {
		if err := setOwnership(dir, *fsGroup, true, nil); err != nil {
			_ = os.RemoveAll(tsDir)
			return false, err
		}
	}

	// The switch: a fresh symlink renamed over ..data.
	tmpLink := filepath.Join(dir, newDataDirName)
	if err := os.Remove(tmpLink); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.Symlink(tsName, tmpLink); err != nil {
		_ = os.RemoveAll(tsDir)
		return false, err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirName)); err != nil {
		_ = os.Remove(tmpLink)
		_ = os.RemoveAll(tsDir)
		return false, err
	}

	if err := createVisible(dir, clean); err != nil {
		return true, err
	}
	if err := removeVisible(dir, oldPaths, clean); err != nil {
		return true, err
	}
	return true, removeStaleTsDirs(dir, tsName)
}

// removeStaleTsDirs removes every ..<timestamp> directory but keep: the
// one just replaced, and any a crash left half-written.
func removeStaleTsDirs(dir, keep string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != keep && isTsDirName(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// validatePayloadPath is upstream's check of a payload path: relative,
// no ".." component, not starting with "..", within length limits.
func validatePayloadPath(p string) error {
	if p == "" {
		return fmt.Errorf("invalid path: must not be empty: %q", p)
	}
	if path.IsAbs(p) {
		return fmt.Errorf("invalid path: must be relative path: %s", p)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("invalid path: must be less than or equal to %d characters", maxPathLen)
	}
	items := strings.Split(p, "/")
	for _, item := range items {
		if item == ".." {
			return fmt.Errorf("invalid path: must not contain '..': %s", p)
		}
		if len(item) > maxFileNameLen {
			return fmt.Errorf("invalid path: filenames must be less than or equal to %d characters", maxFileNameLen)
		}
	}
	if strings.HasPrefix(items[0], "..") && len(items[0]) > 2 {
		return fmt.Errorf("invalid path: must not start with '..': %s", p)
	}
	return nil
}

func isTsDirName(name string) bool {
	return strings.HasPrefix(name, "..") && name != dataDirName && name != newDataDirName &&
		!strings.Contains(name, "/") && len(name) > 2
}

// filesIn lists the regular files below dir, by path relative to it.
func filesIn(dir string) (map[string]bool, error) {
	out := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out[rel] = true
		}
		return nil
	})
	return out, err
}

// sameContents says whether tsDir holds exactly payload, bytes and modes
// (with the bits fsGroup ownership adds).
func sameContents(tsDir string, payload map[string]fileProjection, onDisk map[string]bool, fsGroup bool) (bool, error) {
	if len(onDisk) != len(payload) {
		return false, nil
	}
	for p, fp := range payload {
		if !onDisk[p] {
			return false, nil
		}
		full := filepath.Join(tsDir, p)
		fi, err := os.Lstat(full)
		if err != nil {
			return false, err
		}
		want := os.FileMode(fp.Mode).Perm()
		if fsGroup {
			want |= roMask
		}
		if fi.Mode().Perm() != want {
			return false, nil
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return false, err
		}
		if !bytes.Equal(data, fp.Data) {
			return false, nil
		}
	}
	return true, nil
}

// writePayload writes each file into tsDir with its mode (whatever the
// umask) and owner.
func writePayload(tsDir string, payload map[string]fileProjection) error {
	for p, fp := range payload {
		full := filepath.Join(tsDir, p)
		if err := mkdirs(tsDir, filepath.Dir(p)); err != nil {
			return err
		}
		mode := os.FileMode(fp.Mode).Perm()
		f, err := os.OpenFile(full, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		_, werr := f.Write(fp.Data)
		cerr := f.Chmod(mode)
		if err := errors.Join(werr, cerr, f.Close()); err != nil {
			return fmt.Errorf("write %s: %w", full, err)
		}
		if fp.FsUser != nil {
			if err := os.Chown(full, int(*fp.FsUser), -1); err != nil {
				return err
			}
		}
	}
	return nil
}

// mkdirs makes the directories of rel below base, each 0755 whatever
// the umask, so that any user in the container can reach the files.
func mkdirs(base, rel string) error {
	if rel == "." {
		return nil
	}
	cur := base
	for _, part := range strings.Split(rel, "/") {
		cur = filepath.Join(cur, part)
		if err := os.Mkdir(cur, 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return err
		}
		if err := os.Chmod(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// topLevel is the first component of each payload path.
func topLevel(paths map[string]fileProjection) map[string]bool {
	out := map[string]bool{}
	for p := range paths {
		first, _, _ := strings.Cut(p, "/")
		out[first] = true
	}
	return out
}

// createVisible makes name -> ..data/name for each top-level name.
func createVisible(dir string, payload map[string]fileProjection) error {
	for name := range topLevel(payload) {
		visible := filepath.Join(dir, name)
		if _, err := os.Lstat(visible); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Symlink(filepath.Join(dataDirName, name), visible); err != nil {
			return err
		}
	}
	return nil
}

// removeVisible removes the symlinks of top-level names that the new
// payload no longer has.
func removeVisible(dir string, old map[string]bool, payload map[string]fileProjection) error {
	keep := topLevel(payload)
	gone := map[string]bool{}
	for p := range old {
		first, _, _ := strings.Cut(p, "/")
		if !keep[first] {
			gone[first] = true
		}
	}
	for name := range gone {
		visible := filepath.Join(dir, name)
		target, err := os.Readlink(visible)
		if err != nil || target != filepath.Join(dataDirName, name) {
			continue // not ours
		}
		if err := os.Remove(visible); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
