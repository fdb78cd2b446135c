package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Sharing one store directory between processes rests on two kinds of
// flock.
//
// The store lock (the file "lock"). Every change holds it exclusively while
// it re-reads index.json, moves layers into or out of layers/ and writes the
// new index.json, so changes never overlap and each builds on the last.
// Creating a work directory and pinning layers hold it shared. Get and List
// do not take it: index.json is only ever replaced whole, by rename.
//
// Work directories (tmp/<prefix><random>/). Each import or pull works in its
// own, which it flocks (the directory itself) for as long as it lives; a
// process's flocks go when it dies. Whoever holds the store lock
// exclusively may therefore treat a work directory whose flock it can take
// as left by a crash, and delete it. A work directory is created and locked
// under the shared store lock, so that no collection sees it unlocked.
//
// Pins. Before an import relies on a layer already in layers/ (to skip
// unpacking it, or as a lower layer of the next), it lists the layers it
// wants in its work directory's pins file, under the shared store lock, and
// only then looks which exist. Collections, under the exclusive lock, keep
// every layer that the index names or a live work directory pins. Together
// with publishing new layers in the same locked step that writes the index
// naming them, a layer is never deleted while anyone can still use it.

// storeLock is one hold of the store lock. Every hold opens the lock file
// anew: flocks on separate opens exclude each other even within a process.
type storeLock struct{ f *os.File }

// lockStore takes the store lock, unix.LOCK_SH or unix.LOCK_EX, waiting for
// it.
func (s *Store) lockStore(how int) (*storeLock, error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	if err := flock(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return &storeLock{f: f}, nil
}

func (l *storeLock) unlock() { l.f.Close() }

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// work is a directory under tmp/ that this process holds the flock of: an
// import's or pull's private space, or layers on their way to deletion.
type work struct {
	dir string
	f   *os.File // dir, flocked exclusively
}

const pinsFile = "pins"

// newWork creates a work directory.
func (s *Store) newWork(prefix string) (*work, error) {
	l, err := s.lockStore(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	return s.newWorkLocked(prefix)
}

// newWorkLocked creates a work directory. Callers hold the store lock.
func (s *Store) newWorkLocked(prefix string) (*work, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), prefix)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(dir)
	if err == nil {
		if err = flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &work{dir: dir, f: f}, nil
}

// remove deletes the work directory and then lets go of it.
func (w *work) remove() error {
	err := os.RemoveAll(w.dir)
	w.f.Close()
	return err
}

// pin records that w will use the layers diffIDs and returns which of them
// the store has, and the index as it was when it looked: those stay until
// w is removed.
func (s *Store) pin(w *work, diffIDs []string) (map[string]bool, *index, error) {
	l, err := s.lockStore(unix.LOCK_SH)
	if err != nil {
		return nil, nil, err
	}
	defer l.unlock()
	// Written whole under the shared lock: collections, holding it
	// exclusively, read it complete or not at all.
	if err := os.WriteFile(filepath.Join(w.dir, pinsFile), []byte(strings.Join(diffIDs, "\n")), 0o600); err != nil {
		return nil, nil, err
	}
	idx, err := s.current()
	if err != nil {
		return nil, nil, err
	}
	present := map[string]bool{}
	for _, d := range diffIDs {
		_, err := os.Lstat(s.layerDir(d))
		switch {
		case err == nil:
			present[d] = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, err
		}
	}
	return present, idx, nil
}

// garbage is what a collection took from the store, to delete after the
// exclusive lock is released: work directories it holds the flocks of.
type garbage []*work

// dispose deletes the garbage.
func (g garbage) dispose() error {
	var first error
	for _, w := range g {
		if err := w.remove(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// sweep collects what crashes left behind.
func (s *Store) sweep() error {
	l, err := s.lockStore(unix.LOCK_EX)
	if err != nil {
		return err
	}
	idx, err := s.reload()
	if err != nil {
		l.unlock()
		return err
	}
	g, err := s.collectLocked(idx)
	l.unlock()
	if derr := g.dispose(); err == nil {
		err = derr
	}
	return err
}

// collectLocked takes what no live process needs: work directories whose
// flock it can take (their process died), and layer directories that
// neither idx nor a live work directory's pins name. The layers are moved
// into a work directory of their own first, where deleting them cannot leave
// a half layer under its name. The caller holds the store lock exclusively,
// has idx as on disk, and disposes of the garbage after unlocking; it is
// returned even with an error.
func (s *Store) collectLocked(idx *index) (garbage, error) {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, err
	}
	keep := idx.layersInUse()
	var g garbage
	for _, e := range entries {
		p := filepath.Join(s.tmpDir(), e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT): // its owner just removed it
			continue
		case errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP): // not ours
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return g, err
			}
			continue
		case err != nil:
			return g, err
		}
		f := os.NewFile(uintptr(fd), p)
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err == nil {
			g = append(g, &work{dir: p, f: f}) // left by a crash
			continue
		} else if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return g, err
		}
		f.Close()
		b, err := os.ReadFile(filepath.Join(p, pinsFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return g, err
		}
		for _, d := range strings.Fields(string(b)) {
			keep[d] = true
		}
	}
	layers, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil {
		return g, err
	}
	var holder *work
	for _, e := range layers {
		if keep["sha256:"+e.Name()] {
			continue
		}
		if holder == nil {
			if holder, err = s.newWorkLocked("removed-"); err != nil {
				return g, err
			}
			g = append(g, holder)
		}
		if err := os.Rename(filepath.Join(s.dir, "layers", e.Name()), filepath.Join(holder.dir, e.Name())); err != nil {
			return g, err
		}
	}
	return g, nil
}
