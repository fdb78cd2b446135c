package volume

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// isMountPoint and isTmpfs ask the kernel; the mount table must agree.
func TestMountPointChecks(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	plain, tmp, bound := filepath.Join(dir, "plain"), filepath.Join(dir, "tmp"), filepath.Join(dir, "bound")
	for _, d := range []string{plain, tmp, bound} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(tmp, unix.MNT_DETACH) })
	if err := unix.Mount(plain, bound, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(bound, unix.MNT_DETACH) })

	for _, c := range []struct {
		path           string
		mounted, tmpfs bool
	}{
		{plain, false, false},
		{tmp, true, true},
		{bound, true, false},
		{filepath.Join(dir, "missing"), false, false},
		{filepath.Join(tmp, "missing", "deeper"), false, false},
	} {
		mounted, err := isMountPoint(c.path)
		if err != nil || mounted != c.mounted {
			t.Errorf("isMountPoint(%s) = %v, %v; want %v", c.path, mounted, err, c.mounted)
		}
		if _, inTable, _ := mountAt(c.path); inTable != c.mounted {
			t.Errorf("the mount table says %s mounted=%v; want %v", c.path, inTable, c.mounted)
		}
		tmpfs, err := isTmpfs(c.path)
		if err != nil || tmpfs != c.tmpfs {
			t.Errorf("isTmpfs(%s) = %v, %v; want %v", c.path, tmpfs, err, c.tmpfs)
		}
	}
}
