package volume

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestEmptyDirOnDisk(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	pod := newPod("web", corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	got := mustSetUp(t, e.m, pod)

	want := filepath.Join(e.m.root, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "cache")
	if got["cache"] != (Mounted{HostPath: want}) {
		t.Fatalf("SetUp = %+v, want HostPath %s", got["cache"], want)
	}
	fi, _ := statT(t, want)
	if fi.Mode() != os.ModeDir|0o777 {
		t.Errorf("mode = %v, want drwxrwxrwx (whatever the umask)", fi.Mode())
	}
	if line := mountLine(t, want); line != "" {
		t.Errorf("a disk emptyDir must not be a mount point: %s", line)
	}

	// Idempotent: a second SetUp (agent restart) keeps the data.
	if err := os.WriteFile(filepath.Join(want, "f"), bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if again := mustSetUp(t, e.m, pod); again["cache"] != got["cache"] {
		t.Fatalf("second SetUp = %+v, want %+v", again, got)
	}
	if readFile(t, filepath.Join(want, "f")) == "" {
		t.Fatal("data lost by a second SetUp")
	}

	used, err := e.m.Usage(pod.UID, "cache")
	if err != nil {
		t.Fatal(err)
	}
	if used < 10000 || used > 64*1024 {
		t.Errorf("Usage = %d, want the blocks of a 10000-byte file (and the directory)", used)
	}
	// A hard link is counted once.
	if err := os.Link(filepath.Join(want, "f"), filepath.Join(want, "g")); err != nil {
		t.Fatal(err)
	}
	if again, _ := e.m.Usage(pod.UID, "cache"); again != used {
		t.Errorf("Usage with a hard link = %d, want %d", again, used)
	}
	if _, err := e.m.Usage(pod.UID, "nope"); err == nil || !strings.Contains(err.Error(), "not set up") {
		t.Errorf("Usage of a missing volume: %v", err)
	}

	for i := 0; i < 2; i++ {
		if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
			t.Fatalf("TearDown #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(filepath.Join(e.m.root, "pods", string(pod.UID))); !os.IsNotExist(err) {
		t.Errorf("pod directory left after TearDown: %v", err)
	}
}

func TestEmptyDirFSGroup(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	pod := newPod("web", corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(4321))}
	dir := mustSetUp(t, e.m, pod)["cache"].HostPath
	fi, st := statT(t, dir)
	if st.Gid != 4321 {
		t.Errorf("gid = %d, want the fsGroup 4321", st.Gid)
	}
	if fi.Mode() != os.ModeDir|os.ModeSetgid|0o777 {
		t.Errorf("mode = %v, want drwxrwsrwx", fi.Mode())
	}
}

func TestEmptyDirMemoryEnforcesSizeLimit(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{NodeAllocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}})
	pod := newPod("web", corev1.Volume{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("4Mi")),
	}}})
	dir := mustSetUp(t, e.m, pod)["shm"].HostPath
	line := mountLine(t, dir)
	if !strings.Contains(line, " - tmpfs ") || !strings.Contains(line, "size=4096k") {
		t.Fatalf("want a 4 MiB tmpfs at %s, mountinfo has %q", dir, line)
	}
	mustSetUp(t, e.m, pod) // idempotent: no second mount on top
	if n := len(mountsBelow(t, dir)); n != 1 {
		t.Fatalf("%d mounts at %s after two SetUps, want 1", n, dir)
	}

	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	var werr error
	written := 0
	for i := 0; i < 8 && werr == nil; i++ {
		var n int
		n, werr = f.Write(chunk)
		written += n
	}
	f.Close()
	if !isErrno(werr, unix.ENOSPC) {
		t.Fatalf("writing 8 MiB into a 4 MiB emptyDir: err = %v after %d bytes, want ENOSPC", werr, written)
	}
	used, err := e.m.Usage(pod.UID, "shm")
	if err != nil {
		t.Fatal(err)
	}
	if used < 3<<20 || used > 4<<20 {
		t.Errorf("Usage = %d, want about 4 MiB", used)
	}

	if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
		t.Fatal(err)
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left after TearDown: %v", left)
	}
}

func TestEmptyDirMemoryRemountedAfterReboot(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	pod := newPod("web", corev1.Volume{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}})
	dir := mustSetUp(t, e.m, pod)["shm"].HostPath
	if err := unix.Unmount(dir, 0); err != nil { // what a reboot does
		t.Fatal(err)
	}
	mustSetUp(t, e.m, pod)
	if line := mountLine(t, dir); !strings.Contains(line, " - tmpfs ") {
		t.Fatalf("tmpfs not mounted again: %q", line)
	}
}

func TestEmptyDirMedia(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	for medium, want := range map[corev1.StorageMedium]string{
		"HugePages-2Mi": `MountVolume.SetUp failed for volume "v" : emptyDir medium "HugePages-2Mi" (huge pages) is not supported yet`,
		"Floppy":        `MountVolume.SetUp failed for volume "v" : unknown storage medium "Floppy"`,
	} {
		pod := newPod("p", corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: medium}}})
		if got := setUpErr(t, e.m, pod); got != want {
			t.Errorf("medium %s: %s, want %s", medium, got, want)
		}
	}
}

func TestMemorySize(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	limited := func(limits ...string) *corev1.Pod {
		pod := newPod("p")
		pod.Spec.Containers = nil
		for _, l := range limits {
			c := corev1.Container{Name: "c" + l}
			if l != "" {
				c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(l)}
			}
			pod.Spec.Containers = append(pod.Spec.Containers, c)
		}
		return pod
	}
	withInit := limited("100Mi")
	withInit.Spec.InitContainers = []corev1.Container{
		{Name: "side", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways), Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("50Mi")}}},
		{Name: "big-init", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("300Mi")}}},
	}
	for _, tc := range []struct {
		name        string
		allocatable string
		pod         *corev1.Pod
		sizeLimit   *resource.Quantity
		want        string // "" = no size option
	}{
		{"nothing known", "", limited(""), nil, ""},
		{"node allocatable", "1Gi", limited(""), nil, "1Gi"},
		{"pod limit below allocatable", "1Gi", limited("100Mi", "200Mi"), nil, "300Mi"},
		{"one container without a limit", "1Gi", limited("100Mi", ""), nil, "1Gi"},
		{"sizeLimit below all", "1Gi", limited("100Mi"), q("10Mi"), "10Mi"},
		{"sizeLimit above the pod limit", "1Gi", limited("100Mi"), q("500Mi"), "100Mi"},
		{"sizeLimit without allocatable", "", limited(""), q("10Mi"), "10Mi"},
		{"init container over app+sidecar", "1Gi", withInit, nil, "350Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{}
			if tc.allocatable != "" {
				opts.NodeAllocatable = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(tc.allocatable)}
			}
			got := NewManager(t.TempDir(), nil, opts).memorySize(tc.pod, tc.sizeLimit)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("size = %v, want none", got)
			case tc.want != "" && (got == nil || got.Cmp(resource.MustParse(tc.want)) != 0):
				t.Errorf("size = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestOwnershipNeverFollowsSymlinks(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(filepath.Join(vol, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{outside, filepath.Join(vol, "sub", "f")} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(vol, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(vol, "sub", "up")); err != nil {
		t.Fatal(err)
	}
	if err := setOwnership(vol, 777, false, nil); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		vol:                            os.ModeDir | os.ModeSetgid | 0o770,
		filepath.Join(vol, "sub"):      os.ModeDir | os.ModeSetgid | 0o770,
		filepath.Join(vol, "sub", "f"): 0o660,
	} {
		if fi, st := statT(t, path); fi.Mode() != want || st.Gid != 777 {
			t.Errorf("%s: %v gid %d, want %v gid 777", path, fi.Mode(), st.Gid, want)
		}
	}
	if fi, st := statT(t, outside); fi.Mode() != 0o600 || st.Gid == 777 {
		t.Errorf("a file outside the volume, behind a symlink, was changed: %v gid %d", fi.Mode(), st.Gid)
	}
	if _, st := statT(t, base); st.Gid == 777 {
		t.Error("the directory above the volume, behind a symlink, was changed")
	}
	var lst unix.Stat_t
	if err := unix.Lstat(filepath.Join(vol, "link"), &lst); err != nil || lst.Gid != 777 {
		t.Errorf("the symlink itself gets the group: gid %d (%v)", lst.Gid, err)
	}

	// OnRootMismatch: a root that is already right stops the walk.
	if err := os.Chmod(filepath.Join(vol, "sub", "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setOwnership(vol, 777, false, ptr(corev1.FSGroupChangeOnRootMismatch)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := statT(t, filepath.Join(vol, "sub", "f")); fi.Mode() != 0o600 {
		t.Errorf("OnRootMismatch walked a volume whose root was right: %v", fi.Mode())
	}
	if err := setOwnership(vol, 778, false, ptr(corev1.FSGroupChangeOnRootMismatch)); err != nil {
		t.Fatal(err)
	}
	if _, st := statT(t, filepath.Join(vol, "sub", "f")); st.Gid != 778 {
		t.Errorf("OnRootMismatch did not walk a volume whose root had another group")
	}
}
