// Package memtrim gives back memory that only start-up needed.
//
// Go runs every package's initialiser before main; in a binary that embeds
// kubectl that touches most of the executable's read-only pages (code, type
// data, tables), and the kernel's fault-around maps their neighbours too. Those
// pages are clean and backed by the executable file, so the kernel may drop
// them at any time; ReleaseExecutablePages asks it to do so now, once the
// server is up. Pages the server really uses fault back in from the page cache
// (a minor fault, no I/O); what stays resident afterwards is the working set.
package memtrim

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseExecutablePages advises the kernel to page out the clean, read-only
// mappings of this process's executable. It reports how many bytes were
// advised; errors (an old kernel without MADV_PAGEOUT) are not fatal.
func ReleaseExecutablePages() (int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		// The raw syscall: the range is this process's own mapping, never
		// touched as Go memory.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno != 0 {
			return total, errno
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}
