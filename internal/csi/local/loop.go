package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/mountinfo"
)

// Loop devices are allocated with LOOP_CTL_GET_FREE and configured in one
// step with LOOP_CONFIGURE (direct I/O, so data is not cached twice).
// Other programs on the machine use loop devices too: a device can be
// taken between the two calls, which fails with EBUSY, and then the next
// free one is tried. A volume's devices are found again by their backing
// file in sysfs, never remembered.

const loopControl = "/dev/loop-control"

// loopDevice is one attached loop device.
type loopDevice struct {
	name     string // loopN
	readOnly bool
	dev      uint64 // device number
}

func (l loopDevice) path() string { return "/dev/" + l.name }

// findLoops lists the loop devices backed by image.
func findLoops(image string) ([]loopDevice, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var out []loopDevice
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			return nil, err
		}
		backing := strings.TrimSuffix(string(b), "\n")
		if backing != image && backing != image+" (deleted)" {
			continue
		}
		sys := filepath.Dir(filepath.Dir(f))
		l := loopDevice{name: filepath.Base(sys)}
		if ro, err := os.ReadFile(filepath.Join(sys, "ro")); err == nil {
			l.readOnly = strings.TrimSpace(string(ro)) == "1"
		}
		majMin, err := os.ReadFile(filepath.Join(sys, "dev"))
		if err != nil {
			continue
		}
		if l.dev, err = mountinfo.ParseDev(strings.TrimSpace(string(majMin))); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// writableLoop is the read-write device of image, if attached.
func writableLoop(image string) (loopDevice, bool, error) {
	loops, err := findLoops(image)
	if err != nil {
		return loopDevice{}, false, err
	}
	for _, l := range loops {
		if !l.readOnly {
			return l, true, nil
		}
	}
	return loopDevice{}, false, nil
}

// attachLoop attaches image to a free loop device.
func attachLoop(image string, readOnly bool) (loopDevice, error) {
	mode := os.O_RDWR
	flags := uint32(unix.LO_FLAGS_DIRECT_IO)
	if readOnly {
		mode = os.O_RDONLY
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	img, err := os.OpenFile(image, mode, 0)
	if err != nil {
		return loopDevice{}, err
	}
	defer img.Close()
	ctl, err := os.OpenFile(loopControl, os.O_RDWR, 0)
	if err != nil {
		return loopDevice{}, err
	}
	defer ctl.Close()
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return loopDevice{}, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		name := "loop" + strconv.Itoa(n)
		err = configureLoop(name, img, flags)
		if errors.Is(err, unix.EINVAL) && flags&unix.LO_FLAGS_DIRECT_IO != 0 {
			// the backing file system cannot do direct I/O: go buffered
			flags &^= unix.LO_FLAGS_DIRECT_IO
			err = configureLoop(name, img, flags)
		}
		if errors.Is(err, unix.EBUSY) {
			continue // another program took it first
		}
		if err != nil {
			return loopDevice{}, fmt.Errorf("LOOP_CONFIGURE /dev/%s with %s: %w", name, image, err)
		}
		var st unix.Stat_t
		if err := unix.Stat("/dev/"+name, &st); err != nil {
			return loopDevice{}, err
		}
		return loopDevice{name: name, readOnly: readOnly, dev: st.Rdev}, nil
	}
	return loopDevice{}, fmt.Errorf("attaching %s: every free loop device was taken by another program first", image)
}

func configureLoop(name string, img *os.File, flags uint32) error {
	dev, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer dev.Close()
	cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
	cfg.Info.Flags = flags
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img.Name())
	return unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
}

// detachLoop detaches a loop device; one already detached is fine. A
// device still open (mounted) is only marked to detach on its last close,
// so callers first make sure nothing mounts it.
func detachLoop(l loopDevice) error {
	f, err := os.OpenFile(l.path(), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", l.path(), err)
	}
	return nil
}

// detachAll detaches every loop device backed by image.
func detachAll(image string) error {
	loops, err := findLoops(image)
	if err != nil {
		return err
	}
	for _, l := range loops {
		if err := detachLoop(l); err != nil {
			return err
		}
	}
	return nil
}

// refreshLoopSize makes a loop device take its backing file's new size.
func refreshLoopSize(l loopDevice) error {
	f, err := os.OpenFile(l.path(), os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", l.path(), err)
	}
	return nil
}

// deviceSize is a block device's size in bytes.
func deviceSize(l loopDevice) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", l.name, "size"))
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, err
	}
	return sectors * 512, nil
}
