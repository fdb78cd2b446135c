package volume

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestHostPathTypeChecks(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const char = "/dev/null"
	block := "/dev/loop0" // a block device node, attached or not
	if ok, err := isBlockDevice(block); err != nil || !ok {
		t.Skipf("no block device node at %s: %v", block, err)
	}
	missing := filepath.Join(dir, "missing")

	typed := func(s corev1.HostPathType) *corev1.HostPathType { return &s }
	for _, tc := range []struct {
		path    string
		typ     *corev1.HostPathType
		wantErr string // "" = ok
	}{
		{missing, nil, ""},
		{missing, typed(""), ""},
		{dir, typed(corev1.HostPathDirectory), ""},
		{file, typed(corev1.HostPathDirectory), "hostPath type check failed: " + file + " is not a directory"},
		{missing, typed(corev1.HostPathDirectory), "hostPath type check failed: " + missing + " is not a directory"},
		{file, typed(corev1.HostPathDirectoryOrCreate), "hostPath type check failed: " + file + " is not a directory"},
		{file, typed(corev1.HostPathFile), ""},
		{sock, typed(corev1.HostPathFile), ""}, // upstream: a File is anything but a directory
		{dir, typed(corev1.HostPathFile), "hostPath type check failed: " + dir + " is not a file"},
		{missing, typed(corev1.HostPathFile), "hostPath type check failed: " + missing + " is not a file"},
		{dir, typed(corev1.HostPathFileOrCreate), "hostPath type check failed: " + dir + " is not a file"},
		{sock, typed(corev1.HostPathSocket), ""},
		{file, typed(corev1.HostPathSocket), "hostPath type check failed: " + file + " is not a socket file"},
		{char, typed(corev1.HostPathCharDev), ""},
		{block, typed(corev1.HostPathCharDev), "hostPath type check failed: " + block + " is not a character device"},
		{block, typed(corev1.HostPathBlockDev), ""},
		{char, typed(corev1.HostPathBlockDev), "hostPath type check failed: " + char + " is not a block device"},
		{missing, typed(corev1.HostPathBlockDev), "hostPath type check failed: " + missing + " is not a block device"},
		{dir, typed("Pipe"), "Pipe is an invalid volume type"},
		{dir + "/../x", typed(corev1.HostPathDirectory), "invalid HostPath `" + dir + "/../x`: must not contain '..'"},
		{filepath.Join(dir, "no-parent", "f"), typed(corev1.HostPathFileOrCreate), "no such file or directory"},
	} {
		name := "unset"
		if tc.typ != nil {
			name = string(*tc.typ)
		}
		t.Run(name+" "+filepath.Base(tc.path), func(t *testing.T) {
			err := checkHostPath(tc.path, tc.typ)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.HasSuffix(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want %q", err, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("a check that is not *OrCreate created %s", missing)
	}
}

func TestHostPathCreates(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	base := t.TempDir()
	newDir := filepath.Join(base, "a", "b")
	newFile := filepath.Join(base, "f.log")
	pod := newPod("p",
		corev1.Volume{Name: "d", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: newDir, Type: ptr(corev1.HostPathDirectoryOrCreate)}}},
		corev1.Volume{Name: "f", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: newFile, Type: ptr(corev1.HostPathFileOrCreate)}}},
	)
	got := mustSetUp(t, e.m, pod)
	if got["d"] != (Mounted{HostPath: newDir}) || got["f"] != (Mounted{HostPath: newFile}) {
		t.Fatalf("SetUp = %+v: hostPath volumes are the host paths themselves", got)
	}
	if fi, _ := statT(t, newDir); fi.Mode() != os.ModeDir|0o755 {
		t.Errorf("created directory mode %v, want drwxr-xr-x (the umask is 077)", fi.Mode())
	}
	if fi, _ := statT(t, newFile); fi.Mode() != 0o644 || fi.Size() != 0 {
		t.Errorf("created file mode %v size %d, want an empty -rw-r--r--", fi.Mode(), fi.Size())
	}
	if err := os.WriteFile(newFile, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustSetUp(t, e.m, pod)
	if err := e.m.TearDown(t.Context(), pod.UID); err != nil {
		t.Fatal(err)
	}
	if readFile(t, newFile) != "keep" {
		t.Fatal("SetUp or TearDown touched an existing hostPath file")
	}
	if _, err := os.Stat(newDir); err != nil {
		t.Fatalf("TearDown removed the hostPath directory: %v", err)
	}

	bad := newPod("p", corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: newFile, Type: ptr(corev1.HostPathDirectory)}}})
	want := `MountVolume.SetUp failed for volume "h" : hostPath type check failed: ` + newFile + ` is not a directory`
	if got := setUpErr(t, e.m, bad); got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}
