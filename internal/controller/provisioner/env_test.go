package provisioner

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/testserver"
)

// env is a real moorage server (with the binder and the other server
// controllers) and helpers to drive provisioners against it.
type env struct {
	t    *testing.T
	cfg  *rest.Config
	kube kubernetes.Interface
}

func newEnv(t *testing.T) *env {
	srv := testserver.Start(t)
	return &env{t: t, cfg: srv.Loopback, kube: testserver.Client(t, srv)}
}

// running is a provisioner started by env.run.
type running struct {
	*Controller
	stop func() // cancels Run and waits for it to return
}

// run starts a provisioner on client; setup may set test hooks before Run.
func (e *env) run(client *csi.Client, opts Options, setup func(c *Controller, cancel context.CancelFunc)) *running {
	e.t.Helper()
	if opts.JournalDir == "" {
		opts.JournalDir = e.t.TempDir()
	}
	if opts.RetryStart == 0 {
		opts.RetryStart = 50 * time.Millisecond
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = time.Second
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("PROVISIONER_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c, err := New(e.cfg, client, log, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if setup != nil {
		setup(c, cancel)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	r := &running{Controller: c, stop: func() { cancel(); <-done }}
	e.t.Cleanup(r.stop)
	return r
}

// eventually polls cond until it holds, for 10 s at most.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// class builds a StorageClass of the test driver.
func class(name string, mode storagev1.VolumeBindingMode, policy corev1.PersistentVolumeReclaimPolicy, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       testDriver,
		Parameters:        params,
		ReclaimPolicy:     &policy,
		VolumeBindingMode: &mode,
	}
}

func claim(name, class, size string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

func node(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func (e *env) create(objs ...any) {
	e.t.Helper()
	ctx := context.Background()
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *storagev1.StorageClass:
			_, err = e.kube.StorageV1().StorageClasses().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.PersistentVolumeClaim:
			var got *corev1.PersistentVolumeClaim
			got, err = e.kube.CoreV1().PersistentVolumeClaims(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			if err == nil {
				o.UID = got.UID
			}
		case *corev1.Node:
			_, err = e.kube.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
		case *storagev1.CSINode:
			_, err = e.kube.StorageV1().CSINodes().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Secret:
			_, err = e.kube.CoreV1().Secrets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			e.t.Fatalf("create: unexpected %T", obj)
		}
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) claim(name string) *corev1.PersistentVolumeClaim {
	c, err := e.kube.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) pv(name string) *corev1.PersistentVolume {
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return pv
}

func (e *env) deleteClaim(name string) {
	e.t.Helper()
	if err := e.kube.CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("claim "+name+" gone", func() bool { return e.claim(name) == nil })
}

// waitBound waits until claim is Bound to its provisioned volume and
// returns both.
func (e *env) waitBound(name string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	e.t.Helper()
	var c *corev1.PersistentVolumeClaim
	var pv *corev1.PersistentVolume
	e.eventually("claim "+name+" Bound", func() bool {
		c = e.claim(name)
		if c == nil || c.Status.Phase != corev1.ClaimBound {
			return false
		}
		pv = e.pv(c.Spec.VolumeName)
		return pv != nil && pv.Status.Phase == corev1.VolumeBound
	})
	return c, pv
}

// events are the messages of the events about an object with a reason.
func (e *env) events(object, reason string) []string {
	list, err := e.kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name == object && ev.Reason == reason {
			out = append(out, ev.Type+" "+ev.Message)
		}
	}
	return out
}

// waitEvent waits for an event about object with reason and message.
func (e *env) waitEvent(object, reason, want string) {
	e.t.Helper()
	e.eventually(reason+" event "+want, func() bool {
		for _, m := range e.events(object, reason) {
			if m == want {
				return true
			}
		}
		return false
	})
}

// journalEmpty checks that no CreateVolume is left unfinished in dir.
func journalEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("journal %s still has %s", dir, e.Name())
	}
}
