package attachdetach_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/attachdetach"
	"github.com/moorage/moorage/internal/testserver"
)

// attachmentName is the kubelet's VolumeAttachment name, computed here on
// its own: csi-<sha256 of handle, driver and node>.
func attachmentName(handle, driver, node string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(handle+driver+node)))
}

// env is a real moorage server, whose controllers include this one.
type env struct {
	t    *testing.T
	kube kubernetes.Interface
	ctx  context.Context
}

func newEnv(t *testing.T) *env {
	srv := testserver.Start(t)
	return &env{t: t, kube: testserver.Client(t, srv), ctx: context.Background()}
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

// never checks that cond stays false for d.
func (e *env) never(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			e.t.Fatalf("unexpected: %s", what)
		}
	}
}

// node creates a Ready node whose attachments the controller manages.
func (e *env) node(name string) {
	e.t.Helper()
	n, err := e.kube.CoreV1().Nodes().Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name, Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
	}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	n.ResourceVersion = "" // unconditional: the node-ipam controller may have written the node
	if _, err := e.kube.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// boundVolume creates claim and CSI volume bound to each other and waits
// until the claim is Bound.
func (e *env) boundVolume(claim, pv, driver, handle string, modes ...corev1.PersistentVolumeAccessMode) {
	e.t.Helper()
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	// The volume first, pre-bound by name: the binder completes the bind
	// (the claim's UID) when the claim comes.
	_, err := e.kube.CoreV1().PersistentVolumes().Create(e.ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pv},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:      modes,
			StorageClassName: "",
			ClaimRef:         &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "default", Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: driver, VolumeHandle: handle,
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.kube.CoreV1().PersistentVolumeClaims("default").Create(e.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      modes,
			StorageClassName: ptr.To(""),
			VolumeName:       pv,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.eventually("claim "+claim+" Bound", func() bool {
		c, err := e.kube.CoreV1().PersistentVolumeClaims("default").Get(e.ctx, claim, metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound
	})
}

func (e *env) pod(name, node, namespace, claim string) *corev1.Pod {
	e.t.Helper()
	p, err := e.kube.CoreV1().Pods(namespace).Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "c", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
			}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) deletePod(name string) {
	e.t.Helper()
	if err := e.kube.CoreV1().Pods("default").Delete(e.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) va(name string) *storagev1.VolumeAttachment {
	e.t.Helper()
	va, err := e.kube.StorageV1().VolumeAttachments().Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return va
}

// setStatus plays the external-attacher.
func (e *env) setStatus(name string, status storagev1.VolumeAttachmentStatus) {
	e.t.Helper()
	va := e.va(name)
	va.Status = status
	if _, err := e.kube.StorageV1().VolumeAttachments().UpdateStatus(e.ctx, va, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// setInUse plays the agent reporting its volumes in use.
func (e *env) setInUse(node string, names ...corev1.UniqueVolumeName) {
	e.t.Helper()
	n, err := e.kube.CoreV1().Nodes().Get(e.ctx, node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	n.Status.VolumesInUse = names
	n.ResourceVersion = "" // unconditional: the node-ipam controller may have written the node
	if _, err := e.kube.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) attached(node string) []corev1.AttachedVolume {
	e.t.Helper()
	n, err := e.kube.CoreV1().Nodes().Get(e.ctx, node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n.Status.VolumesAttached
}

// waitEvent waits for an event about a pod with this type, reason and
// message.
func (e *env) waitEvent(pod, typ, reason, msg string) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("event %s %s %q on %s", typ, reason, msg, pod), func() bool {
		list, err := e.kube.CoreV1().Events("").List(e.ctx, metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		return slices.ContainsFunc(list.Items, func(ev corev1.Event) bool {
			return ev.InvolvedObject.Name == pod && ev.Type == typ && ev.Reason == reason && ev.Message == msg &&
				ev.Source.Component == attachdetach.Component
		})
	})
}

// A pod's CSI volume (no CSIDriver object: attach required) gets its
// VolumeAttachment; once attached it is in the node's volumesAttached and
// the pod has upstream's event; when the pod goes, the attachment stays
// while the node reports the volume in use, then is deleted.
func TestAttachDetachLifecycle(t *testing.T) {
	e := newEnv(t)
	e.node("n1")
	e.boundVolume("c1", "pv1", "disk.csi.test", "h1")
	e.pod("p1", "n1", "default", "c1")

	name := attachmentName("h1", "disk.csi.test", "n1")
	var va *storagev1.VolumeAttachment
	e.eventually("VolumeAttachment "+name, func() bool { va = e.va(name); return va != nil })
	if va.Spec.Attacher != "disk.csi.test" || va.Spec.NodeName != "n1" || ptr.Deref(va.Spec.Source.PersistentVolumeName, "") != "pv1" || va.Spec.Source.InlineVolumeSpec != nil {
		t.Fatalf("VolumeAttachment spec = %+v", va.Spec)
	}
	if got := e.attached("n1"); len(got) != 0 {
		t.Fatalf("volumesAttached before the attach: %v", got)
	}

	e.setStatus(name, storagev1.VolumeAttachmentStatus{Attached: true})
	unique := corev1.UniqueVolumeName("kubernetes.io/csi/disk.csi.test^h1")
	e.eventually("volumesAttached", func() bool {
		return slices.Equal(e.attached("n1"), []corev1.AttachedVolume{{Name: unique, DevicePath: ""}})
	})
	e.waitEvent("p1", corev1.EventTypeNormal, "SuccessfulAttachVolume", `AttachVolume.Attach succeeded for volume "pv1" `)

	// The node mounts it; the pod goes: the volume stays attached while
	// the node reports it in use.
	e.setInUse("n1", unique)
	time.Sleep(100 * time.Millisecond) // let the controller see it before the pod goes
	e.deletePod("p1")
	e.never("a detach of a volume in use", time.Second, func() bool {
		va := e.va(name)
		return va == nil || va.DeletionTimestamp != nil || len(e.attached("n1")) == 0
	})
	e.setInUse("n1")
	e.eventually("the VolumeAttachment deleted", func() bool { return e.va(name) == nil })
	e.eventually("volumesAttached empty", func() bool { return len(e.attached("n1")) == 0 })
}

// A driver whose CSIDriver says attachRequired: false gets no
// VolumeAttachment; one that requires it does, and its attach error is
// the pod's FailedAttachVolume event.
func TestAttachRequiredAndAttachError(t *testing.T) {
	e := newEnv(t)
	e.node("n1")
	for name, required := range map[string]bool{"local.csi.test": false, "net.csi.test": true} {
		if _, err := e.kube.StorageV1().CSIDrivers().Create(e.ctx, &storagev1.CSIDriver{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       storagev1.CSIDriverSpec{AttachRequired: ptr.To(required)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.boundVolume("local", "pv-local", "local.csi.test", "l1")
	e.boundVolume("net", "pv-net", "net.csi.test", "n1")
	e.pod("p-local", "n1", "default", "local")
	e.pod("p-net", "n1", "default", "net")

	name := attachmentName("n1", "net.csi.test", "n1")
	e.eventually("VolumeAttachment of the attachable volume", func() bool { return e.va(name) != nil })
	e.never("a VolumeAttachment for a driver with attachRequired: false", 500*time.Millisecond, func() bool {
		return e.va(attachmentName("l1", "local.csi.test", "n1")) != nil
	})

	e.setStatus(name, storagev1.VolumeAttachmentStatus{AttachError: &storagev1.VolumeError{
		Time: metav1.Now(), Message: "rpc error: code = Internal desc = no route to the array",
	}})
	e.waitEvent("p-net", corev1.EventTypeWarning, "FailedAttachVolume",
		`AttachVolume.Attach failed for volume "pv-net" : rpc error: code = Internal desc = no route to the array`)
}

// A ReadWriteOnce volume attached to one node is not attached to a second
// one: the second node's pods learn who holds it, as upstream tells them.
func TestMultiAttach(t *testing.T) {
	e := newEnv(t)
	e.node("n1")
	e.node("n2")
	e.boundVolume("c1", "pv1", "disk.csi.test", "h1")
	e.pod("a", "n1", "default", "c1")
	first := attachmentName("h1", "disk.csi.test", "n1")
	e.eventually("the first VolumeAttachment", func() bool { return e.va(first) != nil })

	e.pod("b", "n2", "default", "c1")
	e.waitEvent("b", corev1.EventTypeWarning, "FailedAttachVolume", `Multi-Attach error for volume "pv1" Volume is already used by pod(s) a`)
	second := attachmentName("h1", "disk.csi.test", "n2")
	if e.va(second) != nil {
		t.Fatal("a ReadWriteOnce volume got a second VolumeAttachment")
	}

	// Once the first pod is gone and the volume detached, the second
	// node gets it.
	e.deletePod("a")
	e.eventually("the first VolumeAttachment deleted", func() bool { return e.va(first) == nil })
	e.eventually("the second VolumeAttachment", func() bool { return e.va(second) != nil })
}

// The seeds' awsElasticBlockStore volume is attached as upstream's CSI
// migration attaches it: a VolumeAttachment for ebs.csi.aws.com, named
// after the translated volume handle, with the PV as its source.
func TestMigratedInTreeVolumeAttach(t *testing.T) {
	e := newEnv(t)
	e.node("n1")
	_, err := e.kube.CoreV1().PersistentVolumes().Create(e.ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "ebs"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:    &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "default", Name: "c"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{AWSElasticBlockStore: &corev1.AWSElasticBlockStoreVolumeSource{
				VolumeID: "aws://us-east-1a/vol-0123456789abcdef0", FSType: "ext4",
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.kube.CoreV1().PersistentVolumeClaims("default").Create(e.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(""), VolumeName: "ebs",
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.pod("p", "n1", "default", "c")
	name := attachmentName("vol-0123456789abcdef0", "ebs.csi.aws.com", "n1")
	var va *storagev1.VolumeAttachment
	e.eventually("VolumeAttachment "+name, func() bool { va = e.va(name); return va != nil })
	if va.Spec.Attacher != "ebs.csi.aws.com" || ptr.Deref(va.Spec.Source.PersistentVolumeName, "") != "ebs" {
		t.Errorf("VolumeAttachment spec = %+v", va.Spec)
	}
	e.setStatus(name, storagev1.VolumeAttachmentStatus{Attached: true})
	e.eventually("volumesAttached", func() bool {
		got := e.attached("n1")
		return len(got) == 1 && got[0].Name == "kubernetes.io/csi/ebs.csi.aws.com^vol-0123456789abcdef0"
	})
}
