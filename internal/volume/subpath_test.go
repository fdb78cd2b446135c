package volume

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// escapeVolume is a volume whose contents a container controls, with
// symlinks planted to get out of it.
func escapeVolume(t *testing.T) (vol, secret string) {
	t.Helper()
	base := t.TempDir()
	vol = filepath.Join(base, "vol")
	secret = filepath.Join(base, "host-secret")
	for _, d := range []string{vol, secret, filepath.Join(vol, "sub", "deep")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"abs":    secret,                  // absolute, outside
		"rel":    "../host-secret",        // relative, outside
		"etc":    "/etc",                  // a host directory
		"inside": "sub/deep",              // stays inside
		"loop":   "loop",                  // a loop
		"chain":  "sub/../../host-secret", // .. hidden in a symlink
	} {
		if err := os.Symlink(target, filepath.Join(vol, link)); err != nil {
			t.Fatal(err)
		}
	}
	return vol, secret
}

func TestSubPathRefusesEscapes(t *testing.T) {
	vol, secret := escapeVolume(t)
	for sub, want := range map[string]string{
		"../host-secret": "unable to provision SubPath `../host-secret`: must not contain '..'",
		"sub/../../x":    "unable to provision SubPath `sub/../../x`: must not contain '..'",
		"/etc":           "error SubPath `/etc` must not be an absolute path",
		"abs":            `subpath "` + vol + `/abs" not within volume path "` + vol + `"`,
		"abs/new/dir":    `subpath "` + vol + `/abs/new/dir" not within volume path "` + vol + `"`,
		"rel":            `subpath "` + vol + `/rel" not within volume path "` + vol + `"`,
		"etc/passwd":     `subpath "` + vol + `/etc/passwd" not within volume path "` + vol + `"`,
		"chain":          `subpath "` + vol + `/chain" not within volume path "` + vol + `"`,
		"loop":           `subpath "` + vol + `/loop" not within volume path "` + vol + `"`,
	} {
		got, err := SubPath(vol, sub)
		if err == nil || err.Error() != want {
			t.Errorf("SubPath(%q) = %q, %v; want error %q", sub, got, err, want)
		}
	}
	if ents, _ := os.ReadDir(secret); len(ents) != 0 {
		t.Fatalf("an escaping subPath created %v outside the volume", ents)
	}
}

func TestSubPathResolvesAndCreates(t *testing.T) {
	vol, _ := escapeVolume(t)
	for sub, want := range map[string]string{
		"":             vol,
		".":            vol,
		"sub":          filepath.Join(vol, "sub"),
		"inside":       filepath.Join(vol, "sub", "deep"), // symlinks inside are followed
		"./sub//deep/": filepath.Join(vol, "sub", "deep"),
		"mysql":        filepath.Join(vol, "mysql"),              // created
		"a/b/c":        filepath.Join(vol, "a", "b", "c"),        // created, with parents
		"inside/new":   filepath.Join(vol, "sub", "deep", "new"), // created through an inside symlink
	} {
		got, err := SubPath(vol, sub)
		if err != nil || got != want {
			t.Errorf("SubPath(%q) = %q, %v; want %q", sub, got, err, want)
		}
	}
	// Created directories take the volume root's permissions, whatever the umask.
	for _, d := range []string{"mysql", "a", "a/b", "a/b/c"} {
		if fi, _ := statT(t, filepath.Join(vol, d)); fi.Mode() != os.ModeDir|0o777 {
			t.Errorf("%s mode %v, want drwxrwxrwx like the volume root", d, fi.Mode())
		}
	}
}

func TestPrepareSubPathOfConfigMapKeepsContents(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"my.cnf": "v1"}})
	pod := newPod("mysql-0", configMapVolume("conf", "app"))
	vol := mustSetUp(t, e.m, pod)["conf"].HostPath

	// SubPath names the file in the current timestamp directory.
	resolved, err := SubPath(vol, "my.cnf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resolved, vol+"/..20") || !strings.HasSuffix(resolved, "/my.cnf") {
		t.Errorf("SubPath = %s, want the file under the ..<timestamp> directory", resolved)
	}
	target, err := e.m.PrepareSubPath(pod.UID, "conf", "mysql", 0, vol, "my.cnf")
	if err != nil {
		t.Fatal(err)
	}
	wantTarget := filepath.Join(e.m.root, "pods", string(pod.UID), "volume-subpaths", "conf", "mysql", "0")
	if target != wantTarget {
		t.Errorf("PrepareSubPath = %s, want %s", target, wantTarget)
	}
	if again, err := e.m.PrepareSubPath(pod.UID, "conf", "mysql", 0, vol, "my.cnf"); err != nil || again != target {
		t.Errorf("second PrepareSubPath = %s, %v", again, err)
	}
	if n := len(mountsBelow(t, target)); n != 1 {
		t.Errorf("%d mounts at %s, want 1", n, target)
	}

	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"my.cnf": "v2"}})
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(vol, "my.cnf")); got != "v2" {
		t.Errorf("volume after Update: %q", got)
	}
	if got := readFile(t, target); got != "v1" {
		t.Errorf("subPath bind after Update: %q, want v1 (subPath mounts get no updates, as upstream)", got)
	}

	// A directory subPath, created on demand, and an escape refused.
	scratch := mustSetUp(t, e.m, newPodWithUID(pod, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}))["data"].HostPath
	dirTarget, err := e.m.PrepareSubPath(pod.UID, "data", "mysql", 1, scratch, "mysql")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirTarget, "ibdata1"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(scratch, "mysql", "ibdata1")) != "x" {
		t.Error("a write through the subPath bind is not in the volume")
	}
	if err := os.Symlink("/etc", filepath.Join(scratch, "evil")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.PrepareSubPath(pod.UID, "data", "mysql", 2, scratch, "evil"); err == nil || !strings.Contains(err.Error(), "not within volume path") {
		t.Errorf("PrepareSubPath through a symlink to /etc: %v", err)
	}

	if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
		t.Fatal(err)
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left after TearDown: %v", left)
	}
}

// newPodWithUID is another spec for the same pod (same UID).
func newPodWithUID(pod *corev1.Pod, vols ...corev1.Volume) *corev1.Pod {
	p := newPod(pod.Name, vols...)
	p.UID = pod.UID
	return p
}

func TestTearDownEverything(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	e.get.putSecret(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, Data: map[string][]byte{"k": []byte("v")}})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c"}, Data: map[string]string{"k": "v"}})
	hostDir := filepath.Join(t.TempDir(), "host")
	localDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(localDir, "keep"), []byte("local data"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.get.bind(claim("local"), localPV("pv-local", localDir, corev1.PersistentVolumeFilesystem))
	pod := newPod("all",
		corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		corev1.Volume{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		configMapVolume("config", "c"),
		corev1.Volume{Name: "projected", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}}}}},
		corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: ptr(corev1.HostPathDirectoryOrCreate)}}},
		claimVolume("local", "local", false),
	)
	got := mustSetUp(t, e.m, pod)
	if err := os.WriteFile(filepath.Join(hostDir, "keep"), []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.PrepareSubPath(pod.UID, "local", "app", 0, got["local"].HostPath, "sub"); err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join(e.m.root, "pods", string(pod.UID))
	if n := len(mountsBelow(t, podDir)); n != 5 { // mem, secret, projected, local, subPath
		t.Fatalf("%d mounts under the pod, want 5: %v", n, mountsBelow(t, podDir))
	}
	// Something of the agent's own in the pod directory survives.
	if err := os.WriteFile(filepath.Join(podDir, "etc-hosts"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
			t.Fatalf("TearDown #%d: %v", i+1, err)
		}
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left after TearDown: %v", left)
	}
	ents, _ := os.ReadDir(podDir)
	if len(ents) != 1 || ents[0].Name() != "etc-hosts" {
		t.Errorf("pod directory after TearDown holds %v, want only the agent's etc-hosts", ents)
	}
	if readFile(t, filepath.Join(hostDir, "keep")) != "host data" || readFile(t, filepath.Join(localDir, "keep")) != "local data" {
		t.Fatal("TearDown touched hostPath or local volume data")
	}
	if fi, err := os.Stat(filepath.Join(localDir, "sub")); err != nil || !fi.IsDir() {
		t.Errorf("the subPath directory in the local volume is data too: %v", err)
	}
}

func TestRemoveAllOneFSRefusesOtherFileSystems(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	inner := filepath.Join(dir, "a", "mnt")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(inner, 0)
		if left := mountsBelow(t, dir); len(left) != 0 {
			t.Errorf("mounts left: %v", left)
		}
	})
	if err := os.WriteFile(filepath.Join(inner, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := removeAllOneFS(filepath.Join(dir, "a"))
	if err == nil || !strings.Contains(err.Error(), "on another file system") {
		t.Fatalf("removeAllOneFS across a mount: %v", err)
	}
	if readFile(t, filepath.Join(inner, "precious")) != "x" {
		t.Fatal("removeAllOneFS removed a file on another file system")
	}
}
