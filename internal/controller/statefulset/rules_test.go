package statefulset

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// compatSet is the set of upstream's revision-compatibility fixture
// (pkg/controller/statefulset/testdata, 1.33): its first revision is named
// test-c77f6d978.
func compatSet() *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "test", Namespace: "default", UID: "ec335e25-1045-4216-8634-50cfbe05f3d6", Labels: map[string]string{"sslabel": "value"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "foo"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "foo"}, Annotations: map[string]string{"test": "value"}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "test", Image: "test", ImagePullPolicy: corev1.PullAlways,
						TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile}},
					DNSPolicy: corev1.DNSClusterFirst, RestartPolicy: corev1.RestartPolicyAlways, SchedulerName: "default-scheduler",
					SecurityContext: &corev1.PodSecurityContext{}, TerminationGracePeriodSeconds: ptr.To[int64](30),
				},
			},
			UpdateStrategy:       appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](0)}},
			RevisionHistoryLimit: ptr.To[int32](10),
			PodManagementPolicy:  appsv1.OrderedReadyPodManagement,
		},
	}
}

func TestRevisionMatchesUpstreamFixture(t *testing.T) {
	rev, err := newRevision(compatSet(), 1, ptr.To[int32](0))
	if err != nil {
		t.Fatal(err)
	}
	if rev.Name != "test-c77f6d978" || rev.Labels["controller.kubernetes.io/hash"] != "c77f6d978" || rev.Labels["app"] != "foo" {
		t.Errorf("revision %s labels %v; upstream names it test-c77f6d978", rev.Name, rev.Labels)
	}
	want := `{"spec":{"template":{"$patch":"replace","metadata":{"annotations":{"test":"value"},"creationTimestamp":null,"labels":{"app":"foo"}},"spec":{"containers":[{"image":"test","imagePullPolicy":"Always","name":"test","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30}}}}`
	if string(rev.Data.Raw) != want {
		t.Errorf("data\n%s\nwant\n%s", rev.Data.Raw, want)
	}
	if ref := rev.OwnerReferences[0]; ref.Kind != "StatefulSet" || ref.Name != "test" || !*ref.Controller || !*ref.BlockOwnerDeletion {
		t.Errorf("owner %+v", ref)
	}
}

func TestApplyRevisionRestoresTemplate(t *testing.T) {
	set := compatSet()
	rev, err := newRevision(set, 1, ptr.To[int32](0))
	if err != nil {
		t.Fatal(err)
	}
	changed := set.DeepCopy()
	changed.Spec.Template.Spec.Containers[0].Image = "other"
	changed.Spec.Template.Labels["extra"] = "x"
	restored, err := applyRevision(changed, rev)
	if err != nil {
		t.Fatal(err)
	}
	if img := restored.Spec.Template.Spec.Containers[0].Image; img != "test" {
		t.Errorf("image %q, want test", img)
	}
	if _, ok := restored.Spec.Template.Labels["extra"]; ok {
		t.Errorf("labels %v: $patch replace should drop extra", restored.Spec.Template.Labels)
	}
}

func TestClaimOwnersFollowRetentionPolicy(t *testing.T) {
	set := compatSet()
	set.UID = types.UID("set-uid")
	inRange := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "test-0", UID: "pod0-uid"}}
	condemned := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "test-3", UID: "pod3-uid"}}
	for _, tc := range []struct {
		scaled, deleted  appsv1.PersistentVolumeClaimRetentionPolicyType
		pod              *corev1.Pod
		wantSet, wantPod bool
	}{
		{retain, retain, inRange, false, false},
		{retain, retain, condemned, false, false},
		{retain, remove, inRange, true, false},
		{retain, remove, condemned, true, false},
		{remove, retain, inRange, false, false},
		{remove, retain, condemned, false, true},
		{remove, remove, inRange, true, false},
		{remove, remove, condemned, false, true},
	} {
		t.Run(fmt.Sprintf("%s-%s-%s", tc.scaled, tc.deleted, tc.pod.Name), func(t *testing.T) {
			set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenScaled: tc.scaled, WhenDeleted: tc.deleted}
			claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "www-" + tc.pod.Name}}
			// A claim owned by both, without controller flags, is never right.
			claim.OwnerReferences = []metav1.OwnerReference{
				{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name, UID: set.UID},
				{APIVersion: "v1", Kind: "Pod", Name: tc.pod.Name, UID: tc.pod.UID},
			}
			if claimOwnersUpToDate(claim, set, tc.pod) {
				t.Fatal("non-controller refs counted as up to date")
			}
			setClaimOwners(claim, set, tc.pod)
			if !claimOwnersUpToDate(claim, set, tc.pod) {
				t.Fatalf("after setClaimOwners: refs %+v not up to date", claim.OwnerReferences)
			}
			if hasOwnerRef(claim, set) != tc.wantSet || hasOwnerRef(claim, tc.pod) != tc.wantPod {
				t.Fatalf("refs %+v, want set=%v pod=%v", claim.OwnerReferences, tc.wantSet, tc.wantPod)
			}
			for _, ref := range claim.OwnerReferences {
				if !*ref.Controller || !*ref.BlockOwnerDeletion {
					t.Errorf("ref %+v is not a controller ref", ref)
				}
			}
		})
	}
}

func TestClaimWithStaleOrForeignOwnerIsLeftAlone(t *testing.T) {
	set := compatSet()
	set.UID = "set-uid"
	set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenScaled: remove, WhenDeleted: remove}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "test-0", UID: "pod-uid"}}
	stale := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "Pod", Name: "test-0", UID: "old-pod-uid", Controller: ptr.To(true)}}}}
	if !claimOwnersUpToDate(stale, set, pod) {
		t.Error("a claim of an old pod of the same name must be left to the garbage collector")
	}
	foreign := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "example.com/v1", Kind: "Thing", Name: "x", UID: "x", Controller: ptr.To(true)}}}}
	if !claimOwnersUpToDate(foreign, set, pod) {
		t.Error("a claim controlled by another owner must not get our refs")
	}
	foreign.OwnerReferences = append(foreign.OwnerReferences, *metav1.NewControllerRef(set, setKind))
	if claimOwnersUpToDate(foreign, set, pod) {
		t.Error("our ref beside another controller must be scrubbed")
	}
	setClaimOwners(foreign, set, pod)
	if len(foreign.OwnerReferences) != 1 || foreign.OwnerReferences[0].Kind != "Thing" {
		t.Errorf("refs %+v, want only the foreign controller", foreign.OwnerReferences)
	}
}

func TestNewVersionedPodFollowsPartition(t *testing.T) {
	current := compatSet()
	current.Spec.Replicas = ptr.To[int32](4)
	current.Spec.UpdateStrategy.RollingUpdate.Partition = ptr.To[int32](2)
	current.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 3}
	update := current.DeepCopy()
	update.Spec.Template.Spec.Containers[0].Image = "new"
	for ordinal, want := range map[int]string{3: "cur", 4: "cur", 5: "upd", 6: "upd"} {
		pod := newVersionedPod(current, update, "cur", "upd", ordinal)
		if got := pod.Labels[appsv1.StatefulSetRevisionLabel]; got != want {
			t.Errorf("ordinal %d at revision %s, want %s", ordinal, got, want)
		}
		if img := pod.Spec.Containers[0].Image; (want == "upd") != (img == "new") {
			t.Errorf("ordinal %d has image %s at revision %s", ordinal, img, want)
		}
	}
}

func TestMaxUnavailableRoundsDownToAtLeastOne(t *testing.T) {
	for _, tc := range []struct {
		v        *intstr.IntOrString
		replicas int
		want     int
	}{
		{nil, 5, 1},
		{ptr.To(intstr.FromInt32(3)), 5, 3},
		{ptr.To(intstr.FromString("50%")), 5, 2},
		{ptr.To(intstr.FromString("10%")), 5, 1},
		{ptr.To(intstr.FromString("100%")), 4, 4},
	} {
		if got, err := maxUnavailableOf(tc.v, tc.replicas); err != nil || got != tc.want {
			t.Errorf("maxUnavailable %v of %d = %d, %v; want %d", tc.v, tc.replicas, got, err, tc.want)
		}
	}
}

func TestPodNamesAndOrdinals(t *testing.T) {
	for name, want := range map[string]int{"web-0": 0, "web-12": 12, "my-web-3": 3, "web": -1, "web-x": -1, "web-99999999999": -1} {
		if got := ordinalOf(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}); got != want {
			t.Errorf("ordinal of %s = %d, want %d", name, got, want)
		}
	}
}
