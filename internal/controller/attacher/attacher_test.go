package attacher

import (
	"maps"
	"slices"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const finalizer = "external-attacher/fake-csi-moorage-io"

func TestFinalizerName(t *testing.T) {
	for driver, want := range map[string]string{
		testDriver:              finalizer,
		"hostpath.csi.k8s.io":   "external-attacher/hostpath-csi-k8s-io",
		"ebs.csi.aws.com":       "external-attacher/ebs-csi-aws-com",
		"odd_driver/":           "external-attacher/odd-driver-X",
		"pd.csi.storage.gke.io": "external-attacher/pd-csi-storage-gke-io",
	} {
		if got := finalizerName(driver); got != want {
			t.Errorf("finalizerName(%q) = %q, want %q", driver, got, want)
		}
	}
}

// A volume is attached with everything upstream sends (node ID from
// CSINode, capability, attributes, controller-publish secret), the
// finalizers go on the VolumeAttachment and the PV, the publish context
// becomes the attachment metadata; a deleted VolumeAttachment is detached
// (with the node ID of its annotation once the driver left the node) and
// goes; the PV keeps its finalizer until it is deleted itself.
func TestAttachDetach(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{publish: true, context: map[string]string{"devicePath": "/dev/disk/by-id/vol-1"}}
	e.run(d.serve(t), Options{})
	e.node("n1", "node-id-1")
	e.secret("publish", map[string]string{"user": "admin", "password": "s3cret"})
	e.volume("pv1", "vol-1", func(pv *corev1.PersistentVolume) {
		pv.Spec.MountOptions = []string{"noatime"}
		pv.Spec.CSI.FSType = "xfs"
		pv.Spec.CSI.ReadOnly = true // dropped: no PUBLISH_READONLY
		pv.Spec.CSI.VolumeAttributes = map[string]string{"pool": "fast"}
		pv.Spec.CSI.ControllerPublishSecretRef = &corev1.SecretReference{Namespace: "default", Name: "publish"}
	})
	e.attach("va1", "pv1", "n1")

	va := e.waitAttached("va1")
	if !maps.Equal(va.Status.AttachmentMetadata, d.context) || va.Status.AttachError != nil {
		t.Errorf("status = %+v, want the publish context as metadata", va.Status)
	}
	if !slices.Contains(va.Finalizers, finalizer) || va.Annotations["csi.alpha.kubernetes.io/node-id"] != "node-id-1" {
		t.Errorf("VolumeAttachment finalizers %v, annotations %v", va.Finalizers, va.Annotations)
	}
	if pv := e.pv("pv1"); !slices.Contains(pv.Finalizers, finalizer) {
		t.Errorf("PV finalizers %v, want %s", pv.Finalizers, finalizer)
	}
	pubs := d.published()
	if len(pubs) != 1 {
		t.Fatalf("%d ControllerPublishVolume calls, want 1", len(pubs))
	}
	req := pubs[0]
	mount := req.GetVolumeCapability().GetMount()
	if req.VolumeId != "vol-1" || req.NodeId != "node-id-1" || req.Readonly ||
		mount.GetFsType() != "xfs" || !slices.Equal(mount.GetMountFlags(), []string{"noatime"}) ||
		req.GetVolumeCapability().GetAccessMode().GetMode() != csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER ||
		!maps.Equal(req.VolumeContext, map[string]string{"pool": "fast"}) ||
		!maps.Equal(req.Secrets, map[string]string{"user": "admin", "password": "s3cret"}) {
		t.Errorf("ControllerPublishVolume request = %v", req)
	}

	// The driver leaves the node: the detach uses the annotation.
	cn, err := e.kube.StorageV1().CSINodes().Get(e.ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cn.Spec.Drivers = nil
	if _, err := e.kube.StorageV1().CSINodes().Update(e.ctx, cn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the informer sees it
	e.deleteVA("va1")
	e.eventually("va1 gone", func() bool { return e.va("va1") == nil })
	unpubs := d.unpublished()
	if len(unpubs) != 1 || unpubs[0].VolumeId != "vol-1" || unpubs[0].NodeId != "node-id-1" ||
		!maps.Equal(unpubs[0].Secrets, map[string]string{"user": "admin", "password": "s3cret"}) {
		t.Fatalf("ControllerUnpublishVolume requests = %v", unpubs)
	}
	if pv := e.pv("pv1"); !slices.Contains(pv.Finalizers, finalizer) {
		t.Errorf("the PV lost its finalizer while it lives: %v", pv.Finalizers)
	}
	if err := e.kube.CoreV1().PersistentVolumes().Delete(e.ctx, "pv1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("pv1 gone", func() bool { return e.pv("pv1") == nil })
}

// A failing attach is recorded in status.attachError with the driver's
// gRPC status and retried; the success clears it. A failing detach is
// recorded in status.detachError, and the finalizer stays until a detach
// succeeds.
func TestAttachAndDetachErrors(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{publish: true,
		publishErr: func(n int) error {
			if n <= 2 {
				return status.Error(codes.Internal, "the array is busy")
			}
			return nil
		},
		unpublishErr: func(n int) error {
			if n <= 2 {
				return status.Error(codes.Unavailable, "the array is away")
			}
			return nil
		},
	}
	e.run(d.serve(t), Options{})
	e.node("n1", "node-id-1")
	e.volume("pv1", "vol-1", nil)
	e.attach("va1", "pv1", "n1")

	e.eventually("attachError", func() bool {
		va := e.va("va1")
		return va.Status.AttachError != nil && va.Status.AttachError.Message == "rpc error: code = Internal desc = the array is busy" &&
			!va.Status.AttachError.Time.IsZero()
	})
	if va := e.waitAttached("va1"); va.Status.AttachError != nil {
		t.Errorf("attachError left after the attach: %+v", va.Status.AttachError)
	}
	if n := len(d.published()); n != 3 {
		t.Errorf("%d ControllerPublishVolume calls, want 3", n)
	}

	e.deleteVA("va1")
	e.eventually("detachError", func() bool {
		va := e.va("va1")
		return va != nil && va.Status.DetachError != nil && va.Status.DetachError.Message == "rpc error: code = Unavailable desc = the array is away" &&
			slices.Contains(va.Finalizers, finalizer)
	})
	e.eventually("va1 gone", func() bool { return e.va("va1") == nil })
	if n := len(d.unpublished()); n != 3 {
		t.Errorf("%d ControllerUnpublishVolume calls, want 3", n)
	}
}

// What fails before the driver is called: a missing secret, a node whose
// CSINode lacks the driver. Nothing is sent to the driver, and the
// VolumeAttachment gets no finalizer (its deletion is not blocked).
func TestAttachFailsBeforeTheCall(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{publish: true}
	e.run(d.serve(t), Options{})
	e.node("n1", "node-id-1")
	e.node("n2", "")
	e.volume("pv-secret", "vol-1", func(pv *corev1.PersistentVolume) {
		pv.Spec.CSI.ControllerPublishSecretRef = &corev1.SecretReference{Namespace: "default", Name: "missing"}
	})
	e.volume("pv2", "vol-2", nil)
	e.attach("va-secret", "pv-secret", "n1")
	e.attach("va-node", "pv2", "n2")
	for name, want := range map[string]string{
		"va-secret": `failed to load secret "default/missing": secrets "missing" not found`,
		"va-node":   "CSINode n2 does not contain driver " + testDriver,
	} {
		e.eventually(name+" attachError", func() bool {
			va := e.va(name)
			return va.Status.AttachError != nil && va.Status.AttachError.Message == want
		})
		if va := e.va(name); len(va.Finalizers) != 0 || va.Status.Attached {
			t.Errorf("%s: finalizers %v, attached %v", name, va.Finalizers, va.Status.Attached)
		}
	}
	if n := len(d.published()); n != 0 {
		t.Errorf("%d ControllerPublishVolume calls, want none", n)
	}
	e.deleteVA("va-secret")
	e.eventually("va-secret gone", func() bool { return e.va("va-secret") == nil })
}

// A driver without PUBLISH_UNPUBLISH_VOLUME is attached trivially: attached
// at once, no call, no finalizer, gone at once when deleted. An attacher
// for one node leaves other nodes' VolumeAttachments alone.
func TestTrivialAttachAndNodeLocal(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{}
	e.run(d.serve(t), Options{NodeName: "n1"})
	e.node("n1", "node-id-1")
	e.node("n2", "node-id-2")
	e.volume("pv1", "vol-1", nil)
	e.attach("va1", "pv1", "n1")
	e.attach("va2", "pv1", "n2")
	va := e.waitAttached("va1")
	if len(va.Finalizers) != 0 || len(va.Status.AttachmentMetadata) != 0 {
		t.Errorf("trivially attached: finalizers %v, metadata %v", va.Finalizers, va.Status.AttachmentMetadata)
	}
	if pv := e.pv("pv1"); slices.Contains(pv.Finalizers, finalizer) {
		t.Errorf("PV finalizers %v", pv.Finalizers)
	}
	time.Sleep(300 * time.Millisecond)
	if va := e.va("va2"); va.Status.Attached {
		t.Error("the attacher of n1 attached a volume to n2")
	}
	e.deleteVA("va1")
	e.eventually("va1 gone", func() bool { return e.va("va1") == nil })
	if n := len(d.published()) + len(d.unpublished()); n != 0 {
		t.Errorf("%d calls to the driver, want none", n)
	}
}

// A PublishReadonly driver gets readonly from the PV, and a block volume's
// capability; a PV marked for deletion is not attached.
func TestAttachReadOnlyBlockAndDeletedPV(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{publish: true, readonly: true}
	e.run(d.serve(t), Options{})
	e.node("n1", "node-id-1")
	e.volume("pv1", "vol-1", func(pv *corev1.PersistentVolume) {
		pv.Spec.CSI.ReadOnly = true
		pv.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
	})
	e.attach("va1", "pv1", "n1")
	e.waitAttached("va1")
	req := d.published()[0]
	if !req.Readonly || req.GetVolumeCapability().GetBlock() == nil ||
		req.GetVolumeCapability().GetAccessMode().GetMode() != csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY {
		t.Errorf("ControllerPublishVolume request = %v", req)
	}

	e.volume("pv2", "vol-2", func(pv *corev1.PersistentVolume) { pv.Finalizers = []string{"test/keep"} })
	if err := e.kube.CoreV1().PersistentVolumes().Delete(e.ctx, "pv2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.attach("va2", "pv2", "n1")
	e.eventually("va2 attachError", func() bool {
		va := e.va("va2")
		return va.Status.AttachError != nil && va.Status.AttachError.Message == `PersistentVolume "pv2" is marked for deletion`
	})
	if n := len(d.published()); n != 1 {
		t.Errorf("%d ControllerPublishVolume calls, want 1", n)
	}
}

// A VolumeAttachment of an in-tree volume upstream migrated (the seeds'
// awsElasticBlockStore) reaches ebs.csi.aws.com's ControllerPublish with
// the translated volume handle; the finalizer goes on the PV itself.
func TestAttachMigratedInTreeVolume(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{publish: true}
	e.run(d.serve(t), Options{DriverName: "ebs.csi.aws.com"})
	e.node("n1", "")
	cn, err := e.kube.StorageV1().CSINodes().Get(e.ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cn.Spec.Drivers = []storagev1.CSINodeDriver{{Name: "ebs.csi.aws.com", NodeID: "i-0abc"}}
	if _, err := e.kube.StorageV1().CSINodes().Update(e.ctx, cn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.volume("ebs", "", func(pv *corev1.PersistentVolume) {
		pv.Spec.CSI = nil
		pv.Spec.AWSElasticBlockStore = &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: "aws://us-east-1a/vol-0123456789abcdef0", FSType: "ext4"}
	})
	if _, err := e.kube.StorageV1().VolumeAttachments().Create(e.ctx, &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "va-ebs"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: "n1",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("ebs")}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitAttached("va-ebs")
	if got := d.published(); len(got) != 1 || got[0].VolumeId != "vol-0123456789abcdef0" {
		t.Errorf("ControllerPublishVolume calls: %v", got)
	}
	if pv := e.pv("ebs"); !slices.Contains(pv.Finalizers, "external-attacher/ebs-csi-aws-com") {
		t.Errorf("PV finalizers = %v", pv.Finalizers)
	}
}
