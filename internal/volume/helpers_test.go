package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The tests run with a strict umask, so that any mode that depends on
// the umask instead of an explicit chmod shows up.
func TestMain(m *testing.M) {
	unix.Umask(0o077)
	os.Exit(m.Run())
}

// requireRoot skips a test that mounts, chowns or makes devices.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts tmpfs, binds and loop devices, and changes ownership")
	}
}

// fakeGetter is a map-backed Getter; the API side is not under test. A
// missing object is the API's NotFound error (plural resource names).
type fakeGetter struct {
	mu         sync.Mutex
	configMaps map[string]*corev1.ConfigMap // by namespace/name
	secrets    map[string]*corev1.Secret
	claims     map[string]*corev1.PersistentVolumeClaim
	volumes    map[string]*corev1.PersistentVolume
}

var _ Getter = (*fakeGetter)(nil)

func newFakeGetter() *fakeGetter {
	return &fakeGetter{
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
		claims:     map[string]*corev1.PersistentVolumeClaim{},
		volumes:    map[string]*corev1.PersistentVolume{},
	}
}

func (g *fakeGetter) ConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cm, ok := g.configMaps[ns+"/"+name]; ok {
		return cm.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("configmaps"), name)
}

func (g *fakeGetter) Secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.secrets[ns+"/"+name]; ok {
		return s.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func (g *fakeGetter) PersistentVolumeClaim(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.claims[ns+"/"+name]; ok {
		return c.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumeclaims"), name)
}

func (g *fakeGetter) PersistentVolume(_ context.Context, name string) (*corev1.PersistentVolume, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.volumes[name]; ok {
		return v.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumes"), name)
}

func (g *fakeGetter) putConfigMap(cm *corev1.ConfigMap) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.configMaps[cm.Namespace+"/"+cm.Name] = cm
}

func (g *fakeGetter) putSecret(s *corev1.Secret) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.secrets[s.Namespace+"/"+s.Name] = s
}

func (g *fakeGetter) deleteConfigMap(ns, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.configMaps, ns+"/"+name)
}

// bind records a claim Bound to a volume, both sides pointing at each
// other, as the binder leaves them.
func (g *fakeGetter) bind(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if pvc.UID == "" {
		pvc.UID = types.UID("uid-" + pvc.Name)
	}
	pvc.Spec.VolumeName = pv.Name
	pvc.Status.Phase = corev1.ClaimBound
	pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID}
	pv.Status.Phase = corev1.VolumeBound
	g.claims[pvc.Namespace+"/"+pvc.Name] = pvc
	g.volumes[pv.Name] = pv
}

// testEnv is a Manager on a fresh root. Cleanup tears down every pod
// left there, then fails the test if any mount remains under the root
// (and removes it, so that the temporary directory can go).
type testEnv struct {
	t    *testing.T
	root string
	get  *fakeGetter
	m    *Manager
}

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{t: t, root: root, get: newFakeGetter()}
	e.m = NewManager(root, e.get, opts)
	t.Cleanup(func() {
		entries, _ := os.ReadDir(filepath.Join(e.m.root, "pods"))
		for _, ent := range entries {
			if err := e.m.TearDown(context.Background(), types.UID(ent.Name())); err != nil {
				t.Errorf("TearDown(%s) in cleanup: %v", ent.Name(), err)
			}
		}
		if left := mountsBelow(t, e.m.root); len(left) > 0 {
			t.Errorf("mounts left under %s: %v", e.m.root, left)
			for _, p := range left {
				_ = unix.Unmount(p, unix.MNT_DETACH)
			}
		}
	})
	return e
}

// mountsBelow reads /proc/self/mountinfo itself (not through the code
// under test) for the mount points at or below dir.
func mountsBelow(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// mountLine is the mountinfo line whose mount point is exactly dir.
func mountLine(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	found := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			found = line
		}
	}
	return found
}

var podSeq struct {
	sync.Mutex
	n int
}

// newPod is a pod in namespace default with a fresh UID, one container
// mounting every volume given.
func newPod(name string, vols ...corev1.Volume) *corev1.Pod {
	podSeq.Lock()
	podSeq.n++
	uid := fmt.Sprintf("%08d-0000-4000-8000-%012d", time.Now().UnixNano()%1e8, podSeq.n)
	podSeq.Unlock()
	c := corev1.Container{Name: "app", Image: "busybox"}
	for _, v := range vols {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: "/mnt/" + v.Name})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, Volumes: vols, NodeName: "node-1"},
	}
}

func ptr[T any](v T) *T { return &v }

func mustSetUp(t *testing.T, m *Manager, pod *corev1.Pod) map[string]Mounted {
	t.Helper()
	out, err := m.SetUp(context.Background(), pod)
	if err != nil {
		t.Fatalf("SetUp: %v", err)
	}
	return out
}

// setUpErr is the error text of a SetUp expected to fail.
func setUpErr(t *testing.T, m *Manager, pod *corev1.Pod) string {
	t.Helper()
	_, err := m.SetUp(context.Background(), pod)
	if err == nil {
		t.Fatalf("SetUp succeeded; want an error")
	}
	return err.Error()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func statT(t *testing.T, path string) (os.FileInfo, *unix.Stat_t) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fi, &st
}

func isErrno(err error, errno unix.Errno) bool { return errors.Is(err, errno) }
