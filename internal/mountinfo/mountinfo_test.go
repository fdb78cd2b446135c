package mountinfo

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	table := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
95 22 7:3 / /var/lib/with\040space ro,nosuid - xfs /dev/loop3 rw
96 22 0:5 /loop3 /pods/p/dev ro master:2 - devtmpfs udev rw,size=10k
`
	got, err := parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Dev: unix.Mkdev(8, 1), Root: "/", MountPoint: "/", Options: "rw,relatime", FSType: "ext4", Source: "/dev/vda1"},
		{Dev: unix.Mkdev(7, 3), Root: "/", MountPoint: "/var/lib/with space", Options: "ro,nosuid", FSType: "xfs", Source: "/dev/loop3"},
		{Dev: unix.Mkdev(0, 5), Root: "/loop3", MountPoint: "/pods/p/dev", Options: "ro", FSType: "devtmpfs", Source: "udev"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if got[0].ReadOnly() || !got[1].ReadOnly() || !got[2].ReadOnly() {
		t.Error("ReadOnly misread the options")
	}
	if _, err := parse(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("a short line was accepted")
	}
}

func TestReadThisProcess(t *testing.T) {
	mounts, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.MountPoint == "/" {
			return
		}
	}
	t.Fatalf("no mount at / among %d", len(mounts))
}
