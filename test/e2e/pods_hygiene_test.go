package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func (m *moorage) client(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", m.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	return kubernetes.NewForConfigOrDie(cfg)
}

// leftovers lists what pods may leave on the node under dataDir: mounts
// (pod network namespaces among them), processes, pod directories and
// cgroups.
func leftovers(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	for _, mnt := range mountsUnder(t, dataDir) {
		out = append(out, "mount "+mnt)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, dataDir) && !strings.Contains(cmd, " up ") {
			out = append(out, "process "+cmd)
		}
	}
	pods, _ := os.ReadDir(filepath.Join(dataDir, "agent", "pods"))
	for _, p := range pods {
		out = append(out, "pod dir "+p.Name())
	}
	return out
}

// podCycles is how many pods TestPodHygiene creates and deletes; the issue
// asks for 1,000 (MOORAGE_POD_CYCLES overrides).
func podCycles() int {
	if n, err := strconv.Atoi(os.Getenv("MOORAGE_POD_CYCLES")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// TestPodHygiene creates and deletes many pods with every kind of volume
// that mounts something (disk and memory emptyDirs, a secret, a configMap,
// a hostPath claim): afterwards nothing of them is left on the node — no
// mount, process, directory.
func TestPodHygiene(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	c := m.client(t)
	ctx := context.Background()
	hostDir := t.TempDir()
	if _, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, StorageClassName: "",
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}},
		},
	}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(""), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mount := func(name, path string) corev1.VolumeMount { return corev1.VolumeMount{Name: name, MountPath: path} }
	newPod := func(i int) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cycle-%04d", i)},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To(int64(0)),
				Containers: []corev1.Container{{
					Name: "main", Image: "busybox", ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"},
					VolumeMounts: []corev1.VolumeMount{mount("disk", "/disk"), mount("mem", "/mem"), mount("secret", "/secret"), mount("cm", "/cm"), mount("claim", "/claim")},
				}},
				Volumes: []corev1.Volume{
					{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
					{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
					{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
					{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"}}},
				},
			},
		}
	}
	cycle := func(i int) error {
		pods := c.CoreV1().Pods("default")
		if _, err := pods.Create(ctx, newPod(i), metav1.CreateOptions{}); err != nil {
			return err
		}
		name := fmt.Sprintf("cycle-%04d", i)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase == corev1.PodRunning {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never Running: %+v", name, p.Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		for {
			_, err := pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never went away", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	n := podCycles()
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := range work {
				if err := cycle(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d pod create/run/delete cycles in %v", n, time.Since(start))
	for i, err := range errs {
		if i < 5 {
			t.Error(err)
		}
	}
	// The API forgets a pod with no grace period at once; the agent tears
	// it down right after.
	var left []string
	eventually(time.Minute, func() bool { left = leftovers(t, m.DataDir); return len(left) == 0 })
	if len(left) > 0 {
		t.Errorf("%d things left after %d pods came and went, e.g. %v\nmoorage's log:\n%s", len(left), n, left[:min(len(left), 10)], m.Output())
	}
	if _, err := os.Stat(hostDir); err != nil {
		t.Errorf("the hostPath claim's directory is gone: %v", err)
	}
}

// TestAgentRestartAdoptsPods: stopping and starting moorage leaves running
// pods running; the new agent finds their containers (same ID, no restart),
// serves exec again, and cleans up when they are deleted.
func TestAgentRestartAdoptsPods(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	dir := t.TempDir()
	m := startMoorageIn(t, dir)
	m.hostImage(t, "busybox")
	pod := `apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo kept > /data/f; exec sleep 3600"], volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
  - {name: data, emptyDir: {}}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "survivor.yaml", pod))
	waitPodRow(t, m, v, "default", "survivor", "1/1", "Running")
	before := m.pod(t, v, "default", "survivor")
	if code, err := m.Stop(); err != nil || code != 0 {
		t.Fatalf("stopping moorage: %d %v", code, err)
	}
	m2 := startMoorageIn(t, dir)
	time.Sleep(3 * time.Second) // the new agent's first syncs
	waitPodRow(t, m2, v, "default", "survivor", "1/1", "Running")
	after := m2.pod(t, v, "default", "survivor")
	if after == nil || after.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID || after.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Fatalf("the container was not adopted: before %+v\nafter %+v", before.Status.ContainerStatuses, after.Status.ContainerStatuses)
	}
	expectOK(t, m2.kubectl(t, v, "exec", "survivor", "--", "cat", "/data/f"), "kept")
	m2.mustKubectl(t, v, "delete", "pod", "survivor", "--grace-period=1")
	var left []string
	if !eventually(30*time.Second, func() bool { left = leftovers(t, dir); return len(left) == 0 }) {
		t.Errorf("left after the adopted pod was deleted: %v", left)
	}
}
