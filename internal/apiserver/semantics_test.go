package apiserver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/testserver"
)

func cm(name string, labels map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func statefulSet(name string, replicas int32) *appsv1.StatefulSet {
	l := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: l}, ServiceName: name,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
		},
	}
}

func TestListPagingIsConsistent(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm(n, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	page1, err := c.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{Limit: 2, FieldSelector: notRootCA})
	if err != nil || len(page1.Items) != 2 || page1.Continue == "" {
		t.Fatalf("page 1: %v, %d items, continue %q", err, len(page1.Items), page1.Continue)
	}
	// A change between pages does not show in later pages: they are read at
	// the first page's resourceVersion.
	if err := c.CoreV1().ConfigMaps("default").Delete(ctx, "e", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range page1.Items {
		names = append(names, i.Name)
	}
	cont := page1.Continue
	for cont != "" {
		p, err := c.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{Limit: 2, Continue: cont, FieldSelector: notRootCA})
		if err != nil {
			t.Fatal(err)
		}
		if p.ResourceVersion != page1.ResourceVersion {
			t.Fatalf("page resourceVersion %s, want %s", p.ResourceVersion, page1.ResourceVersion)
		}
		for _, i := range p.Items {
			names = append(names, i.Name)
		}
		cont = p.Continue
	}
	if got := strings.Join(names, ","); got != "a,b,c,d,e" {
		t.Fatalf("paged list = %s, want a,b,c,d,e", got)
	}
}

func TestWatchThroughSelectorReportsEntryAndExit(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	w, err := c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{LabelSelector: "tier=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	created, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm("x", map[string]string{"tier": "db"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Labels["tier"] = "web"
	updated, err := c.CoreV1().ConfigMaps("default").Update(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	updated.Labels["tier"] = "cache"
	if _, err := c.CoreV1().ConfigMaps("default").Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []watch.EventType{watch.Added, watch.Deleted}
	for _, typ := range want {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != typ {
				t.Fatalf("got %s, want %s", ev.Type, typ)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", typ)
		}
	}
}

// TestWatchesShareDecodedObjects: watches decode each revision once and
// share the object (see decodeCache); a watch that changes what it sends (a
// DELETED for an object leaving its selector, with the new resourceVersion)
// must not change what the others see. Run with -race.
func TestWatchesShareDecodedObjects(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	const watchers = 6
	list, err := c.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ws []watch.Interface
	for i := range watchers {
		// From now: the objects already there are no events.
		opts := metav1.ListOptions{ResourceVersion: list.ResourceVersion, LabelSelector: "app=shared"}
		if i%2 == 0 {
			opts.LabelSelector = "tier=web"
		}
		w, err := c.CoreV1().ConfigMaps("default").Watch(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		ws = append(ws, w)
	}
	obj, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm("x", map[string]string{"tier": "web", "app": "shared"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	createdRV := obj.ResourceVersion
	obj.Labels["tier"] = "db"
	obj, err = c.CoreV1().ConfigMaps("default").Update(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		typ  watch.EventType
		rv   string
		tier string
	}
	want := map[bool][]seen{
		true:  {{watch.Added, createdRV, "web"}, {watch.Deleted, obj.ResourceVersion, "web"}},
		false: {{watch.Added, createdRV, "web"}, {watch.Modified, obj.ResourceVersion, "db"}},
	}
	for i, w := range ws {
		for _, exp := range want[i%2 == 0] {
			select {
			case ev := <-w.ResultChan():
				got, ok := ev.Object.(*corev1.ConfigMap)
				if !ok {
					t.Fatalf("watch %d: %T", i, ev.Object)
				}
				if s := (seen{ev.Type, got.ResourceVersion, got.Labels["tier"]}); s != exp {
					t.Errorf("watch %d: got %+v, want %+v", i, s, exp)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("watch %d: no %s event", i, exp.typ)
			}
		}
	}
}

func TestWatchListSendsInitialEventsThenBookmark(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm("one", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Only "one": the root CA publisher adds kube-root-ca.crt at any time.
	w, err := c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{
		SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true, FieldSelector: "metadata.name=one",
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := <-w.ResultChan()
	if ev.Type != watch.Added {
		t.Fatalf("first event %s, want ADDED", ev.Type)
	}
	ev = <-w.ResultChan()
	m, _ := ev.Object.(*corev1.ConfigMap)
	if ev.Type != watch.Bookmark || m == nil || m.Annotations[metav1.InitialEventsAnnotationKey] != "true" {
		t.Fatalf("want the initial-events-end bookmark, got %s %+v", ev.Type, ev.Object)
	}
	// Without NotOlderThan the request is invalid, as upstream (client-go
	// then falls back to list+watch).
	_, err = c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want 422 Invalid, got %v", err)
	}
}

func TestFinalizersHoldDeletion(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	obj := cm("held", nil)
	obj.Finalizers = []string{"example.com/hold"}
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().ConfigMaps("default").Delete(ctx, "held", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.CoreV1().ConfigMaps("default").Get(ctx, "held", metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp == nil {
		t.Fatalf("want the object kept with a deletionTimestamp: %v %+v", err, got)
	}
	got.Finalizers = append(got.Finalizers, "example.com/another")
	if _, err := c.CoreV1().ConfigMaps("default").Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("adding a finalizer while deleting: want 422, got %v", err)
	}
	if _, err := c.CoreV1().ConfigMaps("default").Patch(ctx, "held", types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps("default").Get(ctx, "held", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the last finalizer: want NotFound, got %v", err)
	}
}

func TestStatusSplitGenerationAndScale(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	sts := statefulSet("web", 2)
	sts.Status.Replicas = 7 // ignored on create
	got, err := c.AppsV1().StatefulSets("default").Create(ctx, sts, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Generation != 1 || got.Status.Replicas != 0 {
		t.Fatalf("create: generation %d status.replicas %d, want 1 and 0", got.Generation, got.Status.Replicas)
	}
	if got.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType || got.Spec.PodManagementPolicy != appsv1.OrderedReadyPodManagement {
		t.Fatalf("defaults not applied: %+v", got.Spec)
	}
	got.Status.Replicas, got.Status.ObservedGeneration = 2, 1
	got, err = c.AppsV1().StatefulSets("default").UpdateStatus(ctx, got, metav1.UpdateOptions{})
	if err != nil || got.Status.Replicas != 2 || got.Generation != 1 {
		t.Fatalf("status update: %v %+v", err, got)
	}
	got.Spec.Replicas = ptr.To[int32](5)
	got.Status.Replicas = 0 // a main-resource write cannot change status
	got, err = c.AppsV1().StatefulSets("default").Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || got.Status.Replicas != 2 || got.Generation != 2 {
		t.Fatalf("spec update: %v generation %d status.replicas %d", err, got.Generation, got.Status.Replicas)
	}
	scale, err := c.AppsV1().StatefulSets("default").GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil || scale.Spec.Replicas != 5 || scale.Status.Selector != "app=web" {
		t.Fatalf("scale: %v %+v", err, scale)
	}
	scale.Spec.Replicas = 1
	if _, err := c.AppsV1().StatefulSets("default").UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ = c.AppsV1().StatefulSets("default").Get(ctx, "web", metav1.GetOptions{})
	if *got.Spec.Replicas != 1 || got.Generation != 3 {
		t.Fatalf("after scale: replicas %d generation %d", *got.Spec.Replicas, got.Generation)
	}
	// Stale resourceVersion: 409.
	scale.Spec.Replicas = 4
	if _, err := c.AppsV1().StatefulSets("default").UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale scale: want Conflict, got %v", err)
	}
}

func TestCreateSemantics(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	gen := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "gen-"}}
	got, err := c.CoreV1().ConfigMaps("default").Create(ctx, gen, metav1.CreateOptions{})
	if err != nil || !strings.HasPrefix(got.Name, "gen-") || len(got.Name) != len("gen-")+5 {
		t.Fatalf("generateName: %v %q", err, got.Name)
	}
	dry, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm("dry", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil || dry.UID == "" {
		t.Fatalf("dry run: %v", err)
	}
	if _, err := c.CoreV1().ConfigMaps("default").Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run wrote the object: %v", err)
	}
	if _, err := c.CoreV1().ConfigMaps("missing-ns").Create(ctx, cm("x", nil), metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("create in a missing namespace: want NotFound, got %v", err)
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}
	_, err = c.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.accessModes") {
		t.Fatalf("invalid claim: want 422 naming spec.accessModes, got %v", err)
	}
	pvc.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	got2, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil || got2.Status.Phase != corev1.ClaimPending || *got2.Spec.VolumeMode != corev1.PersistentVolumeFilesystem {
		t.Fatalf("claim: %v %+v", err, got2)
	}
}

func TestUnauthenticatedRequestsAreRefused(t *testing.T) {
	srv := testserver.Start(t)
	cfg := rest.CopyConfig(srv.Loopback)
	cfg.BearerToken = "wrong"
	c := kubernetes.NewForConfigOrDie(cfg)
	_, err := c.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Fatalf("want 401, got %v", err)
	}
	// /version and the health checks are public, as upstream.
	hc, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: cfg.TLSClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/readyz", "/livez", "/healthz", "/version"} {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s without credentials: %d, want 200", path, resp.StatusCode)
		}
	}
}

func TestPutCreatesWhereTheResourceAllowsIt(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "svc"}}
	got, err := c.CoreV1().Endpoints("default").Update(ctx, ep, metav1.UpdateOptions{})
	if err != nil || got.UID == "" {
		t.Fatalf("PUT of a missing Endpoints (create on update): %v", err)
	}
	_, err = c.CoreV1().ConfigMaps("default").Update(ctx, cm("missing", nil), metav1.UpdateOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("PUT of a missing ConfigMap: want NotFound, got %v", err)
	}
}

func TestDefaultStorageClassAdmission(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	claim := func(name string, class *string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	}
	create := func(c2 *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
		got, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, c2, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := create(claim("before", nil)); got.Spec.StorageClassName != nil {
		t.Fatalf("no default class yet, got %q", *got.Spec.StorageClassName)
	}
	for _, name := range []string{"older", "newer"} {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}}, Provisioner: "example.com/x"}
		if _, err := c.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
	}
	if got := create(claim("after", nil)); got.Spec.StorageClassName == nil || *got.Spec.StorageClassName != "newer" {
		t.Fatalf("want the newest default class, got %v", got.Spec.StorageClassName)
	}
	if got := create(claim("none", ptr.To(""))); *got.Spec.StorageClassName != "" {
		t.Fatalf(`"" means no class, got %q`, *got.Spec.StorageClassName)
	}
	beta := claim("beta", nil)
	beta.Annotations = map[string]string{"volume.beta.kubernetes.io/storage-class": "older"}
	if got := create(beta); got.Spec.StorageClassName != nil {
		t.Fatalf("the beta annotation names the class; got %q", *got.Spec.StorageClassName)
	}
}

// A Secret's stringData is write-only: merged into data (its keys win) on
// create and update, never stored or returned, as upstream.
func TestSecretStringDataMergesIntoData(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	s, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "s"},
		Data:       map[string][]byte{"a": []byte("from data"), "b": []byte("kept")},
		StringData: map[string]string{"a": "from stringData", "c": "new"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "from stringData", "b": "kept", "c": "new"}
	check := func(s *corev1.Secret) {
		t.Helper()
		if len(s.StringData) != 0 || len(s.Data) != len(want) {
			t.Fatalf("data %v, stringData %v", s.Data, s.StringData)
		}
		for k, v := range want {
			if string(s.Data[k]) != v {
				t.Errorf("data[%s] = %q, want %q", k, s.Data[k], v)
			}
		}
	}
	check(s)
	got, err := c.CoreV1().Secrets("default").Get(ctx, "s", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(got)
	got.StringData = map[string]string{"b": "updated"}
	want["b"] = "updated"
	s, err = c.CoreV1().Secrets("default").Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(s)
	_, err = c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bad"}, StringData: map[string]string{"no/slash": "x"},
	}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "data[no/slash]") {
		t.Errorf("a bad stringData key: %v", err)
	}
}
