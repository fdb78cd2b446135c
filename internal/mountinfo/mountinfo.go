// Package mountinfo reads the mount table of this process's mount namespace
// from /proc/self/mountinfo (proc(5)). Mounts are read afresh on every call,
// never remembered: other processes mount and unmount too.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of the table.
type Mount struct {
	Dev        uint64 // st_dev of the mounted file system (field 3, major:minor)
	Root       string // the path within that file system which is mounted
	MountPoint string
	Options    string // per-mount options: "rw,nosuid,relatime", ...
	FSType     string
	Source     string
}

// ReadOnly says whether the mount itself is read-only.
func (m Mount) ReadOnly() bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// Read returns the mounts in the table's order: a mount stacked on another
// at the same point comes after it.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

// parse reads the table: fields 3 to 6 are the device, root, mount point and
// options; the file system type and source follow the " - " separator.
func parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("unexpected line in /proc/self/mountinfo: %q", sc.Text())
		}
		dev, err := ParseDev(fields[2])
		if err != nil {
			return nil, fmt.Errorf("line %q of /proc/self/mountinfo: %w", sc.Text(), err)
		}
		out = append(out, Mount{
			Dev:        dev,
			Root:       unescape(fields[3]),
			MountPoint: unescape(fields[4]),
			Options:    fields[5],
			FSType:     fields[sep+1],
			Source:     unescape(fields[sep+2]),
		})
	}
	return out, sc.Err()
}

// ParseDev parses a "major:minor" device number, as mountinfo and sysfs
// write them.
func ParseDev(s string) (uint64, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ":")
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	return unix.Mkdev(uint32(a), uint32(b)), nil
}

// unescape undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
