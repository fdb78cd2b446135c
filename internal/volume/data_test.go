package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func configMapVolume(name, cmName string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cmName},
	}}}
}

// hiddenDirs lists the ..<timestamp> directories of an atomic-writer
// volume.
func hiddenDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestConfigMapLayoutAndUpdate(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"},
		Data:       map[string]string{"greeting": "hello", "extra": "x"},
		BinaryData: map[string][]byte{"blob": {0, 1, 2}},
	})
	pod := newPod("web", configMapVolume("config", "app"))
	mt := mustSetUp(t, e.m, pod)["config"]
	dir := filepath.Join(e.m.root, "pods", string(pod.UID), "volumes", "kubernetes.io~configmap", "config")
	if mt != (Mounted{HostPath: dir, ReadOnly: true}) {
		t.Fatalf("Mounted = %+v, want %s read-only", mt, dir)
	}
	if line := mountLine(t, dir); line != "" {
		t.Errorf("a configMap volume lives on disk, not on a mount: %s", line)
	}

	// Upstream's layout: ..data -> ..<timestamp>, each key -> ..data/key.
	ts := hiddenDirs(t, dir)
	if len(ts) != 1 || !strings.HasPrefix(ts[0], "..20") {
		t.Fatalf("hidden directories %v, want one ..<timestamp>", ts)
	}
	if target, err := os.Readlink(filepath.Join(dir, "..data")); err != nil || target != ts[0] {
		t.Fatalf("..data -> %q (%v), want %q", target, err, ts[0])
	}
	for _, key := range []string{"greeting", "extra", "blob"} {
		if target, err := os.Readlink(filepath.Join(dir, key)); err != nil || target != "..data/"+key {
			t.Errorf("%s -> %q (%v), want ..data/%s", key, target, err, key)
		}
		if fi, _ := statT(t, filepath.Join(dir, key)); fi.Mode() != 0o644 {
			t.Errorf("%s mode %v, want the default 0644", key, fi.Mode())
		}
	}
	if fi, _ := statT(t, filepath.Join(dir, ts[0])); fi.Mode() != os.ModeDir|0o755 {
		t.Errorf("timestamp directory mode %v, want drwxr-xr-x", fi.Mode())
	}
	if got := readFile(t, filepath.Join(dir, "blob")); got != "\x00\x01\x02" {
		t.Errorf("binaryData blob = %q", got)
	}

	// A container holding the old file open keeps reading the old bytes.
	old, err := os.Open(filepath.Join(dir, "greeting"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	// Nothing changed: Update writes nothing.
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if again := hiddenDirs(t, dir); len(again) != 1 || again[0] != ts[0] {
		t.Fatalf("an Update without changes rewrote the volume: %v", again)
	}

	e.get.putConfigMap(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"},
		Data:       map[string]string{"greeting": "bonjour", "added": "new"},
	})
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "greeting")); got != "bonjour" {
		t.Errorf("after Update greeting = %q, want bonjour", got)
	}
	if got := readFile(t, filepath.Join(dir, "added")); got != "new" {
		t.Errorf("after Update added = %q, want new", got)
	}
	if b, err := io.ReadAll(old); err != nil || string(b) != "hello" {
		t.Errorf("the open reader sees %q (%v), want the old hello", b, err)
	}
	for _, gone := range []string{"extra", "blob"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s, removed from the ConfigMap, is still visible: %v", gone, err)
		}
	}
	now := hiddenDirs(t, dir)
	if len(now) != 1 || now[0] == ts[0] {
		t.Errorf("hidden directories after Update %v, want one new one (old %s removed)", now, ts[0])
	}
	if _, err := os.Lstat(filepath.Join(dir, "..data_tmp")); !os.IsNotExist(err) {
		t.Errorf("..data_tmp left behind: %v", err)
	}

	// A deleted, non-optional ConfigMap: Update fails and keeps the contents.
	e.get.deleteConfigMap("default", "app")
	err = e.m.Update(context.Background(), pod)
	if err == nil || err.Error() != `MountVolume.SetUp failed for volume "config" : configmap "app" not found` {
		t.Errorf("Update with the ConfigMap gone: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "greeting")); got != "bonjour" {
		t.Errorf("a failed Update changed the contents: %q", got)
	}

	// After TearDown, Update recreates nothing.
	if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
		t.Fatal(err)
	}
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}})
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Update after TearDown recreated %s", dir)
	}
}

func TestItemsAndModes(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"},
		Data:       map[string]string{"a": "A", "b": "B", "c": "C"},
	})
	vol := configMapVolume("config", "app")
	vol.ConfigMap.DefaultMode = ptr(int32(0o440))
	vol.ConfigMap.Items = []corev1.KeyToPath{
		{Key: "a", Path: "conf/nested/a.properties", Mode: ptr(int32(0o600))},
		{Key: "b", Path: "b.txt"},
	}
	pod := newPod("web", vol)
	dir := mustSetUp(t, e.m, pod)["config"].HostPath

	if got := readFile(t, filepath.Join(dir, "conf/nested/a.properties")); got != "A" {
		t.Errorf("item a = %q", got)
	}
	if fi, _ := statT(t, filepath.Join(dir, "conf/nested/a.properties")); fi.Mode() != 0o600 {
		t.Errorf("item mode %v, want its own 0600", fi.Mode())
	}
	if fi, _ := statT(t, filepath.Join(dir, "b.txt")); fi.Mode() != 0o440 {
		t.Errorf("item without a mode: %v, want the defaultMode 0440", fi.Mode())
	}
	if fi, _ := statT(t, filepath.Join(dir, "conf", "nested")); fi.Mode() != os.ModeDir|0o755 {
		t.Errorf("nested directory mode %v, want drwxr-xr-x", fi.Mode())
	}
	if target, _ := os.Readlink(filepath.Join(dir, "conf")); target != "..data/conf" {
		t.Errorf("conf -> %q, want ..data/conf (only top-level names are symlinks)", target)
	}
	if _, err := os.Lstat(filepath.Join(dir, "c")); !os.IsNotExist(err) {
		t.Errorf("key c, not among the items, was projected")
	}

	missing := configMapVolume("config", "app")
	missing.ConfigMap.Items = []corev1.KeyToPath{{Key: "nope", Path: "x"}}
	want := `MountVolume.SetUp failed for volume "config" : configmap references non-existent config key: nope`
	if got := setUpErr(t, e.m, newPod("p", missing)); got != want {
		t.Errorf("missing key: %q, want %q", got, want)
	}
	missing.ConfigMap.Optional = ptr(true)
	d := mustSetUp(t, e.m, newPod("p", missing))["config"].HostPath
	if _, err := os.Lstat(filepath.Join(d, "x")); !os.IsNotExist(err) {
		t.Errorf("an optional source's missing key was projected")
	}
}

func TestPayloadPathsAreValidated(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"}, Data: map[string]string{"..hidden": "x"}})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ok"}, Data: map[string]string{"k": "v"}})
	for _, tc := range []struct {
		vol  corev1.Volume
		want string
	}{
		{configMapVolume("v", "bad"), "invalid path: must not start with '..': ..hidden"},
		{func() corev1.Volume {
			v := configMapVolume("v", "ok")
			v.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: "../../etc/x"}}
			return v
		}(), "invalid path: must not contain '..': ../../etc/x"},
		{func() corev1.Volume {
			v := configMapVolume("v", "ok")
			v.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: "/etc/x"}}
			return v
		}(), "invalid path: must be relative path: /etc/x"},
		{func() corev1.Volume {
			v := configMapVolume("v", "ok")
			v.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: strings.Repeat("n", 256)}}
			return v
		}(), "invalid path: filenames must be less than or equal to 255 characters"},
	} {
		got := setUpErr(t, e.m, newPod("p", tc.vol))
		if want := `MountVolume.SetUp failed for volume "v" : ` + tc.want; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestMissingAndOptionalSources(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	cm := configMapVolume("cm", "missing")
	sec := corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "missing"}}}
	proj := corev1.Volume{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}},
		{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}},
	}}}}
	ok := corev1.Volume{Name: "ok", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	pod := newPod("p", cm, sec, proj, ok)
	got, err := e.m.SetUp(context.Background(), pod)
	if err == nil {
		t.Fatal("SetUp with missing sources succeeded")
	}
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		lines = append(lines, l)
	}
	sort.Strings(lines)
	want := []string{
		`MountVolume.SetUp failed for volume "cm" : configmap "missing" not found`,
		`MountVolume.SetUp failed for volume "proj" : [configmap "gone" not found, secret "gone" not found]`,
		`MountVolume.SetUp failed for volume "sec" : secret "missing" not found`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// The first failure is the configMap's: a *Error whose cause is
	// still a NotFound, for the agent to tell it from other failures.
	var volErr *Error
	if !errors.As(err, &volErr) || volErr.Volume != "cm" || !apierrors.IsNotFound(volErr.Err) {
		t.Errorf("errors.As(*Error) = %#v; want volume cm with a NotFound cause", volErr)
	}
	if _, has := got["ok"]; !has || len(got) != 1 {
		t.Errorf("the volumes that work must still be set up: %v", got)
	}

	// Optional: a missing source is an empty volume.
	cm.ConfigMap.Optional = ptr(true)
	sec.Secret.Optional = ptr(true)
	proj.Projected.Sources[0].ConfigMap.Optional = ptr(true)
	proj.Projected.Sources[1].Secret.Optional = ptr(true)
	pod2 := newPod("p2", cm, sec, proj)
	for name, mt := range mustSetUp(t, e.m, pod2) {
		ents, err := os.ReadDir(mt.HostPath)
		if err != nil {
			t.Fatal(err)
		}
		var visible []string
		for _, ent := range ents {
			if !strings.HasPrefix(ent.Name(), "..") {
				visible = append(visible, ent.Name())
			}
		}
		if len(visible) != 0 {
			t.Errorf("%s: optional missing source shows %v", name, visible)
		}
		if _, err := os.Readlink(filepath.Join(mt.HostPath, "..data")); err != nil {
			t.Errorf("%s: empty volume without ..data: %v", name, err)
		}
	}
}

func TestSecretOnTmpfsWithFSGroup(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{NodeAllocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}})
	e.get.putSecret(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"},
		Data:       map[string][]byte{"password": []byte("s3cr3t"), "user": []byte("admin")},
	})
	vol := corev1.Volume{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: "db", DefaultMode: ptr(int32(0o400)),
		Items: []corev1.KeyToPath{{Key: "password", Path: "pw"}, {Key: "user", Path: "user", Mode: ptr(int32(0o600))}},
	}}}
	pod := newPod("web", vol)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(2000))}
	mt := mustSetUp(t, e.m, pod)["creds"]
	if !strings.HasSuffix(mt.HostPath, "/volumes/kubernetes.io~secret/creds") || !mt.ReadOnly {
		t.Fatalf("Mounted = %+v", mt)
	}
	if line := mountLine(t, mt.HostPath); !strings.Contains(line, " - tmpfs ") || !strings.Contains(line, "size=32768k") {
		t.Fatalf("a secret volume must be a tmpfs sized by the node's allocatable memory: %q", line)
	}
	if got := readFile(t, filepath.Join(mt.HostPath, "pw")); got != "s3cr3t" {
		t.Errorf("pw = %q", got)
	}
	// fsGroup adds group read (0440 for read-only volumes) and the group.
	for path, mode := range map[string]os.FileMode{"pw": 0o440, "user": 0o640} {
		fi, st := statT(t, filepath.Join(mt.HostPath, path))
		if fi.Mode() != mode || st.Gid != 2000 {
			t.Errorf("%s: mode %v gid %d, want %v gid 2000", path, fi.Mode(), st.Gid, mode)
		}
	}
	if fi, st := statT(t, mt.HostPath); fi.Mode()&os.ModeSetgid == 0 || st.Gid != 2000 {
		t.Errorf("volume root mode %v gid %d, want setgid and gid 2000", fi.Mode(), st.Gid)
	}
	// Re-running SetUp with fsGroup-adjusted modes on disk writes nothing.
	before := hiddenDirs(t, mt.HostPath)
	mustSetUp(t, e.m, pod)
	if after := hiddenDirs(t, mt.HostPath); len(after) != 1 || after[0] != before[0] {
		t.Errorf("a second SetUp rewrote an unchanged secret: %v -> %v", before, after)
	}
}

func TestConcurrentCallsForOnePod(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"k": "0"}})
	pod := newPod("web", configMapVolume("config", "app"),
		corev1.Volume{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"k": fmt.Sprint(i*10 + j)}})
				if _, err := e.m.SetUp(context.Background(), pod); err != nil {
					errs <- err
				}
				if err := e.m.Update(context.Background(), pod); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	dir := filepath.Join(e.m.root, "pods", string(pod.UID), "volumes", "kubernetes.io~configmap", "config")
	if ts := hiddenDirs(t, dir); len(ts) != 1 {
		t.Errorf("hidden directories after concurrent updates: %v, want one", ts)
	}
	if n := len(mountsBelow(t, filepath.Join(e.m.root, "pods", string(pod.UID)))); n != 1 {
		t.Errorf("%d mounts, want the one tmpfs", n)
	}
}

func TestAtomicWriterRecoversFromACrash(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"k": "v"}})
	pod := newPod("web", configMapVolume("config", "app"))
	dir := mustSetUp(t, e.m, pod)["config"].HostPath
	current := hiddenDirs(t, dir)[0]
	// A crash mid-write leaves a half-written directory and a stale
	// ..data_tmp; one between the swap and the visible symlinks leaves
	// a name missing.
	half := filepath.Join(dir, "..2020_01_01_00_00_00.123")
	if err := os.Mkdir(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(half), filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "k")); err != nil {
		t.Fatal(err)
	}
	mustSetUp(t, e.m, pod)
	if got := hiddenDirs(t, dir); len(got) != 1 || got[0] != current {
		t.Errorf("hidden directories %v, want only %s", got, current)
	}
	if got := readFile(t, filepath.Join(dir, "k")); got != "v" {
		t.Errorf("k = %q after recovery", got)
	}
	// The stale ..data_tmp goes with the next real write.
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Data: map[string]string{"k": "w"}})
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "..data_tmp")); !os.IsNotExist(err) {
		t.Errorf("..data_tmp survived a write: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "k")); got != "w" {
		t.Errorf("k = %q after Update", got)
	}
}
