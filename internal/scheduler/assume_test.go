package scheduler

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/pvmatch"
)

// offline is a Scheduler on hand-filled listers: the assume bookkeeping
// without a server.
func offline(t *testing.T, objs ...any) *Scheduler {
	t.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	pods, nodes, pvs, pvcs, scs, nss, cns, drivers := idx(), idx(), idx(), idx(), idx(), idx(), idx(), idx()
	s := &Scheduler{
		pods: corelisters.NewPodLister(pods), nodes: corelisters.NewNodeLister(nodes),
		volumes: corelisters.NewPersistentVolumeLister(pvs), claims: corelisters.NewPersistentVolumeClaimLister(pvcs),
		classes: storagelisters.NewStorageClassLister(scs), namespaces: corelisters.NewNamespaceLister(nss),
		csiNodes: storagelisters.NewCSINodeLister(cns), csiDrivers: storagelisters.NewCSIDriverLister(drivers),
		index: pvmatch.NewIndex(), inflight: map[string]*inflight{}, parked: map[string]time.Time{}, backoff: map[string]*backoff{},
		opts: Options{BindTimeout: time.Minute}, placed: newPlacedPods(), requests: NewRequestCache(),
	}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Pod:
			err = pods.Add(o)
			s.placed.set(o)
		case *corev1.Node:
			err = nodes.Add(o)
		case *corev1.PersistentVolume:
			err = pvs.Add(o)
			s.index.Upsert(o)
		case *corev1.PersistentVolumeClaim:
			err = pvcs.Add(o)
		case *storagev1.StorageClass:
			err = scs.Add(o)
		case *storagev1.CSINode:
			err = cns.Add(o)
		case *storagev1.CSIDriver:
			err = drivers.Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func testNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("10")}},
	}
}

func testPod(name, cpu string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}}}
}

// A pod assumed on a node holds its resources there before the API shows
// it: the next pod goes elsewhere.
func TestAssumedPodsHoldTheirNode(t *testing.T) {
	first, second := testPod("pod-1", "3"), testPod("pod-2", "3")
	s := offline(t, testNode("node-a"), testNode("node-b"), first, second)
	d1, err := Schedule(first, s.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	s.assume(first, d1)
	d2, err := Schedule(second, s.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if d1.Node == d2.Node {
		t.Fatalf("both pods on %s", d1.Node)
	}
	// Once the API shows the first pod placed, the record is dropped and
	// the informer's copy counts instead (not twice).
	shown := first.DeepCopy()
	shown.Spec.NodeName = d1.Node
	s.placed.set(shown)
	s.forget(podKey(first))
	snap := s.snapshot()
	if len(snap.Pods) != 0 {
		t.Fatalf("snapshot still holds the assumed pod")
	}
	if n := len(snap.Placed[d1.Node].Pods); n != 1 {
		t.Fatalf("%d pods on %s, want the one the API shows", n, d1.Node)
	}
}

// The volume chosen for an in-flight pod's claim is not offered to another
// pod's claim, and an annotated claim reads as annotated before the informer
// shows it.
func TestAssumedVolumesAndClaims(t *testing.T) {
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local"}, Provisioner: notSupportedProvisioner, VolumeBindingMode: &wffc}
	claim := func(name string) *corev1.PersistentVolumeClaim {
		c := "local"
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &c, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-a"}, Spec: corev1.PersistentVolumeSpec{
		StorageClassName: "local", AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/a"}},
		NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{"node-a"}}}}}}},
	}, Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable}}
	withClaim := func(p *corev1.Pod, c string) *corev1.Pod {
		p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}}}
		return p
	}
	first, second := withClaim(testPod("pod-1", "1"), "data-1"), withClaim(testPod("pod-2", "1"), "data-2")
	s := offline(t, testNode("node-a"), class, claim("data-1"), claim("data-2"), pv, first, second)

	d1, err := Schedule(first, s.snapshot())
	if err != nil || d1.Node != "node-a" || len(d1.Bindings) != 1 {
		t.Fatalf("first: %+v, %v", d1, err)
	}
	f := s.assume(first, d1)
	f.annotated.Insert("data-1") // as proceed does after its patch
	snap := s.snapshot()
	if snap.AssumedVolumes["pv-a"] != "default/data-1" {
		t.Fatalf("assumed volumes: %v", snap.AssumedVolumes)
	}
	for _, c := range snap.Claims {
		if c.Name == "data-1" && c.Annotations[AnnSelectedNode] != "node-a" {
			t.Fatalf("claim data-1 not seen as selected: %v", c.Annotations)
		}
	}
	_, err = Schedule(second, snap)
	if err == nil || !strings.Contains(err.Error(), "1 node(s) didn't find available persistent volumes to bind") {
		t.Fatalf("second: %v", err)
	}
}

func TestBackoffDoublesToTheCap(t *testing.T) {
	var got []time.Duration
	for attempts := 1; attempts <= 6; attempts++ {
		got = append(got, backoffDuration(attempts, time.Second, 10*time.Second))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("back-off = %v, want %v", got, want)
		}
	}
}
