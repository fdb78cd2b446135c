package history_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/history"
	"github.com/moorage/moorage/internal/testserver"
)

func rev(name string, number int64) *appsv1.ControllerRevision {
	return &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: name}, Revision: number}
}

func TestPrunableKeepsLiveAndNewest(t *testing.T) {
	revs := []*appsv1.ControllerRevision{rev("e", 5), rev("a", 1), rev("c", 3), rev("b", 2), rev("d", 4)}
	live := func(r *appsv1.ControllerRevision) bool { return r.Name == "a" || r.Name == "e" }
	for keep, want := range map[int][]string{0: {"b", "c", "d"}, 1: {"b", "c"}, 3: nil, 10: nil, -1: {"b", "c", "d"}} {
		var got []string
		for _, r := range history.Prunable(revs, keep, live) {
			got = append(got, r.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("keep %d: prune %v, want %v", keep, got, want)
		}
	}
}

func TestNameAndHashes(t *testing.T) {
	if n := history.Name(strings.Repeat("x", 300), "abc"); len(n) != 227 || !strings.HasSuffix(n, "x-abc") {
		t.Errorf("long name %q (%d)", n, len(n))
	}
	data := []byte(`{"spec":{}}`)
	if history.HashData(data, ptr.To[int32](0)) == history.HashData(data, ptr.To[int32](1)) {
		t.Error("the collision count does not change the data hash")
	}
	tmpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	h := history.HashTemplate(tmpl, nil)
	if h != history.HashTemplate(tmpl.DeepCopy(), nil) || h == history.HashTemplate(tmpl, ptr.To[int32](1)) {
		t.Error("the template hash is not a function of template and collision count")
	}
}

func TestTemplatePatchReplacesTheTemplate(t *testing.T) {
	data, err := history.TemplatePatch(map[string]any{"kind": "X", "spec": map[string]any{"replicas": 3, "template": map[string]any{"spec": map[string]any{"b": 1, "a": 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"spec":{"template":{"$patch":"replace","spec":{"a":2,"b":1}}}}`; string(data) != want {
		t.Errorf("patch %s, want %s", data, want)
	}
}

func TestEqualAndSort(t *testing.T) {
	a := &appsv1.ControllerRevision{Data: runtime.RawExtension{Raw: []byte("x")}}
	b := a.DeepCopy()
	if !history.Equal(a, b) || history.Equal(a, nil) || !history.Equal(nil, nil) {
		t.Error("Equal")
	}
	b.Data.Raw = []byte("y")
	if len(history.FindEqual([]*appsv1.ControllerRevision{a, b, a}, a)) != 2 {
		t.Error("FindEqual")
	}
	now := metav1.Now()
	revs := []*appsv1.ControllerRevision{rev("b", 2), rev("z", 1), rev("a", 1), rev("c", 1)}
	revs[1].CreationTimestamp, revs[2].CreationTimestamp = now, now
	revs[3].CreationTimestamp = metav1.NewTime(now.Add(-time.Hour))
	history.Sort(revs)
	var got []string
	for _, r := range revs {
		got = append(got, r.Name)
	}
	if !slices.Equal(got, []string{"c", "a", "z", "b"}) {
		t.Errorf("sorted %v", got)
	}
}

// TestCreateResolvesNameCollisions runs against a real server: a revision
// whose name is taken by other data raises the collision count.
func TestCreateResolvesNameCollisions(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	owner := &metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "owner-uid"}
	factory := informers.NewSharedInformerFactory(c, 0)
	store := history.Store{Client: c, Lister: factory.Apps().V1().ControllerRevisions().Lister()}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(runCtx.Done())
	cache.WaitForCacheSync(runCtx.Done(), factory.Apps().V1().ControllerRevisions().Informer().HasSynced)

	mine := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Data: runtime.RawExtension{Raw: []byte(`{"spec":{"template":{"a":1}}}`)}, Revision: 1}
	squatter := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: history.Name("web", history.HashData(mine.Data.Raw, ptr.To[int32](0))), Labels: map[string]string{"app": "web"}},
		Data:       runtime.RawExtension{Raw: []byte(`{"spec":{"template":{"other":1}}}`)},
	}
	if _, err := c.AppsV1().ControllerRevisions("default").Create(ctx, squatter, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	collisions := int32(0)
	created, err := store.Create(ctx, owner, mine, &collisions)
	if err != nil {
		t.Fatal(err)
	}
	if collisions != 1 || created.Name != history.Name("web", history.HashData(mine.Data.Raw, ptr.To[int32](1))) {
		t.Errorf("created %s with %d collisions", created.Name, collisions)
	}
	// Creating the same data again finds it.
	again, err := store.Create(ctx, owner, mine, &collisions)
	if err != nil || again.UID != created.UID || collisions != 1 {
		t.Errorf("second create: %v %v %d", again, err, collisions)
	}
	// Both are selected; the squatter is an orphan, so listed too.
	var owned []*appsv1.ControllerRevision
	deadline := time.Now().Add(10 * time.Second)
	for len(owned) != 2 && time.Now().Before(deadline) {
		owned, _ = store.ListOwned(owner, labels.SelectorFromSet(labels.Set{"app": "web"}))
		time.Sleep(20 * time.Millisecond)
	}
	if len(owned) != 2 {
		t.Errorf("owned %d revisions, want 2", len(owned))
	}
	renumbered, err := store.Renumber(ctx, created, 7)
	if err != nil || renumbered.Revision != 7 {
		t.Errorf("renumber: %v %v", renumbered, err)
	}
}
