package provisioner

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestImmediateClaimIsProvisionedAndBound(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{extra: 1 << 20} // the driver rounds up by 1 MiB
	dir := t.TempDir()
	e.run(drv.serve(t), Options{JournalDir: dir}, nil)

	sc := class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete,
		map[string]string{"csi.storage.k8s.io/fstype": "xfs", "type": "ssd"})
	sc.MountOptions = []string{"noatime"}
	pvc := claim("data", "fast", "1Gi")
	e.create(sc, pvc)
	c, pv := e.waitBound("data")
	name := "pvc-" + string(pvc.UID)

	reqs := drv.createRequests()
	if len(reqs) != 1 {
		t.Fatalf("CreateVolume called %d times, want 1", len(reqs))
	}
	req := reqs[0]
	mount := req.VolumeCapabilities[0].GetMount()
	if req.Name != name || req.CapacityRange.GetRequiredBytes() != 1<<30 || req.CapacityRange.GetLimitBytes() != 0 ||
		!reflect.DeepEqual(req.Parameters, map[string]string{"type": "ssd"}) || len(req.VolumeCapabilities) != 1 ||
		mount.GetFsType() != "xfs" || !slices.Equal(mount.GetMountFlags(), []string{"noatime"}) ||
		req.VolumeCapabilities[0].GetAccessMode().GetMode() != csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER ||
		req.AccessibilityRequirements != nil {
		t.Errorf("CreateVolume request = %v", req)
	}

	// The PV, field by field.
	if c.Spec.VolumeName != name || pv.Name != name {
		t.Errorf("claim bound to %q, PV %q; want %q", c.Spec.VolumeName, pv.Name, name)
	}
	src := pv.Spec.CSI
	if src == nil || src.Driver != testDriver || src.VolumeHandle != "vol-1" || src.FSType != "xfs" || src.ReadOnly ||
		src.VolumeAttributes["fake/name"] != name || src.VolumeAttributes[attrIdentity] == "" {
		t.Errorf("PV csi = %+v", src)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("1025Mi")) != 0 {
		t.Errorf("PV capacity = %s, want the driver's 1025Mi", got.String())
	}
	if !slices.Equal(pv.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) ||
		pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != corev1.PersistentVolumeFilesystem ||
		pv.Spec.StorageClassName != "fast" || !slices.Equal(pv.Spec.MountOptions, []string{"noatime"}) ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.NodeAffinity != nil {
		t.Errorf("PV spec = %+v", pv.Spec)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != "default" || ref.Name != "data" || ref.UID != pvc.UID || ref.Kind != "PersistentVolumeClaim" {
		t.Errorf("PV claimRef = %+v", ref)
	}
	wantAnn := map[string]string{annProvisionedBy: testDriver, annDeletionSecretName: "", annDeletionSecretNS: ""}
	for k, v := range wantAnn {
		if got, ok := pv.Annotations[k]; !ok || got != v {
			t.Errorf("PV annotation %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if !slices.Contains(pv.Finalizers, finalizerPV) {
		t.Errorf("PV finalizers = %v, want %s", pv.Finalizers, finalizerPV)
	}

	e.waitEvent("data", "Provisioning", `Normal External provisioner is provisioning volume for claim "default/data"`)
	e.waitEvent("data", "ProvisioningSucceeded", "Normal Successfully provisioned volume "+name)
	journalEmpty(t, dir)
}

func TestWaitForFirstConsumerWithTopology(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{topology: true}
	e.run(drv.serve(t), Options{}, nil)

	const key = "topology.fake/node"
	e.create(
		node("n1", map[string]string{key: "n1"}),
		node("n2", map[string]string{key: "n2"}),
		csiNode("n1", key), csiNode("n2", key),
		class("local", storagev1.VolumeBindingWaitForFirstConsumer, corev1.PersistentVolumeReclaimDelete, nil),
	)
	pvc := claim("data", "local", "1Gi")
	e.create(pvc)
	// The binder waits for a consumer; nothing is provisioned yet.
	e.waitEvent("data", "WaitForFirstConsumer", "Normal waiting for first consumer to be created before binding")

	// Play the scheduler.
	pvc = e.claim("data")
	pvc.Annotations = map[string]string{annSelectedNode: "n2"}
	if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Update(context.Background(), pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, pv := e.waitBound("data")

	reqs := drv.createRequests()
	if len(reqs) != 1 {
		t.Fatalf("CreateVolume called %d times, want 1", len(reqs))
	}
	ar := reqs[0].AccessibilityRequirements
	seg := func(tp []*csipb.Topology) []string {
		var out []string
		for _, t := range tp {
			out = append(out, t.Segments[key])
		}
		return out
	}
	// Upstream's non-strict topology: every node is requisite, the
	// selected one preferred first.
	if got := seg(ar.GetRequisite()); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("requisite = %v, want [n1 n2]", got)
	}
	if got := seg(ar.GetPreferred()); !slices.Equal(got, []string{"n2", "n1"}) {
		t.Errorf("preferred = %v, want [n2 n1]", got)
	}
	want := &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: corev1.NodeSelectorOpIn, Values: []string{"n2"}}},
	}}}}
	if !reflect.DeepEqual(pv.Spec.NodeAffinity, want) {
		t.Errorf("PV nodeAffinity = %+v, want %+v", pv.Spec.NodeAffinity, want)
	}
}

func TestResourceExhaustedGivesUpTheSelectedNode(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{topology: true, createErr: func(int, *csipb.CreateVolumeRequest) error {
		return status.Error(codes.ResourceExhausted, "no space left on n1")
	}}
	dir := t.TempDir()
	e.run(drv.serve(t), Options{JournalDir: dir, TopologyKeys: []string{"topology.fake/node"}}, nil)
	e.create(
		node("n1", map[string]string{"topology.fake/node": "n1"}),
		class("local", storagev1.VolumeBindingWaitForFirstConsumer, corev1.PersistentVolumeReclaimDelete, nil),
	)
	pvc := claim("data", "local", "1Gi")
	pvc.Annotations = map[string]string{annSelectedNode: "n1"}
	e.create(pvc)

	e.eventually("selected-node removed", func() bool {
		_, ok := e.claim("data").Annotations[annSelectedNode]
		return !ok
	})
	e.waitEvent("data", "ProvisioningFailed",
		`Warning failed to provision volume with StorageClass "local": rpc error: code = ResourceExhausted desc = no space left on n1`)
	if n := len(drv.createRequests()); n != 1 {
		t.Errorf("CreateVolume called %d times, want 1", n)
	}
	journalEmpty(t, dir)
}

func TestFinalErrorBacksOffThenSucceeds(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{createErr: func(n int, _ *csipb.CreateVolumeRequest) error {
		if n <= 3 {
			return status.Error(codes.InvalidArgument, "type ssd is not offered")
		}
		return nil
	}}
	dir := t.TempDir()
	e.run(drv.serve(t), Options{JournalDir: dir, RetryStart: 100 * time.Millisecond}, nil)
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, map[string]string{"type": "ssd"}),
		claim("data", "fast", "1Gi"))

	e.waitEvent("data", "ProvisioningFailed",
		`Warning failed to provision volume with StorageClass "fast": rpc error: code = InvalidArgument desc = type ssd is not offered`)
	e.waitBound("data")
	times := drv.createTimes()
	if len(times) != 4 {
		t.Fatalf("CreateVolume called %d times, want 4", len(times))
	}
	// Exponential back-off: 100 ms, 200 ms, 400 ms (a little slack for
	// the workqueue's timer).
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		if gap := times[i+1].Sub(times[i]); gap < want*9/10 {
			t.Errorf("retry %d came after %v, want at least %v", i+1, gap, want)
		}
	}
	if drv.volumes() != 1 {
		t.Errorf("driver has %d volumes, want 1", drv.volumes())
	}
	journalEmpty(t, dir)
}

// A CreateVolume that timed out may have created the volume: it is sent
// again until it answers, even after the claim is gone, and the volume is
// deleted, never leaked.
func TestInProgressCreateIsNeverAbandoned(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{lostAnswer: func(n int) error {
		if n == 1 {
			return status.Error(codes.DeadlineExceeded, "context deadline exceeded")
		}
		return nil
	}}
	dir := t.TempDir()
	e.run(drv.serve(t), Options{JournalDir: dir, RetryStart: time.Second}, nil)
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil), claim("data", "fast", "1Gi"))
	e.waitEvent("data", "ProvisioningFailed",
		`Warning failed to provision volume with StorageClass "fast": rpc error: code = DeadlineExceeded desc = context deadline exceeded`)
	if !hasFiles(t, dir) {
		t.Fatal("the journal must keep a CreateVolume whose answer was lost")
	}
	e.deleteClaim("data")

	e.eventually("volume deleted", func() bool { return drv.volumes() == 0 && !hasFiles(t, dir) })
	if n, dels := len(drv.createRequests()), drv.deleteRequests(); n != 2 || len(dels) != 1 || dels[0].VolumeId != "vol-1" {
		t.Errorf("CreateVolume called %d times, DeleteVolume %v; want 2 and one for vol-1", n, dels)
	}
}

func TestSelectorIsNotSupported(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{}
	e.run(drv.serve(t), Options{}, nil)
	pvc := claim("data", "fast", "1Gi")
	pvc.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "ssd"}}
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil), pvc)

	e.waitEvent("data", "ProvisioningFailed", `Warning failed to provision volume with StorageClass "fast": claim Selector is not supported`)
	if n := len(drv.createRequests()); n != 0 {
		t.Errorf("CreateVolume called %d times, want 0", n)
	}
}

// TestCrashBetweenCreateVolumeAndPV stops the provisioner right after a
// CreateVolume succeeded and before the PV is written, then starts a new
// one on the same journal.
func TestCrashBetweenCreateVolumeAndPV(t *testing.T) {
	for _, tc := range []struct {
		name        string
		deleteClaim bool
	}{{"claim still there", false}, {"claim deleted meanwhile", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			drv := &fakeDriver{}
			client := drv.serve(t)
			dir := t.TempDir()
			crashed := make(chan struct{})
			first := e.run(client, Options{JournalDir: dir}, func(c *Controller, cancel context.CancelFunc) {
				c.afterCreateVolume = func(*corev1.PersistentVolumeClaim) error {
					cancel() // the process dies here
					close(crashed)
					return errors.New("crashed")
				}
			})
			pvc := claim("data", "fast", "1Gi")
			e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil), pvc)
			<-crashed
			first.stop()
			name := "pvc-" + string(pvc.UID)
			if drv.volumes() != 1 || e.pv(name) != nil {
				t.Fatalf("after the crash: %d volumes, PV %v; want 1 volume and no PV", drv.volumes(), e.pv(name))
			}
			if tc.deleteClaim {
				e.deleteClaim("data")
			}

			e.run(client, Options{JournalDir: dir}, nil)
			if tc.deleteClaim {
				e.eventually("DeleteVolume", func() bool { return len(drv.deleteRequests()) > 0 })
				e.eventually("journal emptied", func() bool { return !hasFiles(t, dir) })
				if dels := drv.deleteRequests(); len(dels) != 1 || dels[0].VolumeId != "vol-1" {
					t.Errorf("DeleteVolume calls = %v, want one for vol-1", dels)
				}
				if drv.volumes() != 0 || e.pv(name) != nil {
					t.Errorf("after healing: %d volumes, PV %v; want none", drv.volumes(), e.pv(name))
				}
				return
			}
			_, pv := e.waitBound("data")
			if pv.Name != name || pv.Spec.CSI.VolumeHandle != "vol-1" || drv.volumes() != 1 {
				t.Errorf("PV %s of volume %s, driver has %d volumes; want %s of vol-1 and 1 volume", pv.Name, pv.Spec.CSI.VolumeHandle, drv.volumes(), name)
			}
			if n := len(drv.createRequests()); n != 2 {
				t.Errorf("CreateVolume called %d times, want 2 (the first and its replay)", n)
			}
			if reqs := drv.createRequests(); !reflect.DeepEqual(reqs[0].Parameters, reqs[1].Parameters) || reqs[0].Name != reqs[1].Name {
				t.Errorf("replay differs: %v vs %v", reqs[0], reqs[1])
			}
			if n := len(drv.deleteRequests()); n != 0 {
				t.Errorf("DeleteVolume called %d times, want 0", n)
			}
			journalEmpty(t, dir)
		})
	}
}

func TestSecretsFromTemplates(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{}
	e.run(drv.serve(t), Options{}, nil)
	e.create(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "data-creds", Namespace: "default"}, Data: map[string][]byte{"password": []byte("s3cret")}},
		class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, map[string]string{
			"csi.storage.k8s.io/provisioner-secret-name":       "${pvc.name}-creds",
			"csi.storage.k8s.io/provisioner-secret-namespace":  "${pvc.namespace}",
			"csi.storage.k8s.io/node-publish-secret-name":      "publish",
			"csi.storage.k8s.io/node-publish-secret-namespace": "kube-system",
		}),
		claim("data", "fast", "1Gi"),
	)
	_, pv := e.waitBound("data")
	if got := drv.createRequests()[0].Secrets; !reflect.DeepEqual(got, map[string]string{"password": "s3cret"}) {
		t.Errorf("CreateVolume secrets = %v", got)
	}
	if pv.Annotations[annDeletionSecretName] != "data-creds" || pv.Annotations[annDeletionSecretNS] != "default" {
		t.Errorf("PV deletion secret annotations = %v", pv.Annotations)
	}
	if ref := pv.Spec.CSI.NodePublishSecretRef; ref == nil || ref.Name != "publish" || ref.Namespace != "kube-system" {
		t.Errorf("PV nodePublishSecretRef = %+v", ref)
	}
	e.deleteClaim("data")
	e.eventually("volume deleted", func() bool { return e.pv(pv.Name) == nil })
	if dels := drv.deleteRequests(); len(dels) != 1 || dels[0].Secrets["password"] != "s3cret" {
		t.Errorf("DeleteVolume calls = %v, want one with the secret", dels)
	}
}

func csiNode(name, key string) *storagev1.CSINode {
	return &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{
		{Name: testDriver, NodeID: name, TopologyKeys: []string{key}}}}}
}

func hasFiles(t *testing.T, dir string) bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) > 0
}
