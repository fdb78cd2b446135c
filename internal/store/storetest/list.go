package storetest

import (
	"fmt"
	"testing"

	"github.com/moorage/moorage/internal/store"
)

func listTests() []test {
	return []test{
		{"list returns the keys with the prefix, sorted, and not those sharing a string prefix", testListPrefix},
		{"list pages with StartKey and Limit and reports More", testListPaging},
		{"list at a past revision shows keys updated, deleted and created since as they were", testListPast},
		{"list pages at a past revision stay at that revision", testListPastPaging},
		{"list at a revision newer than the current one fails with ErrFutureRevision", testListFuture},
		{"list at a revision older than the compacted one fails with ErrCompacted", testListCompacted},
	}
}

func testListPrefix(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	for _, k := range []string{"/a/2", "/ab/x", "/a/1", "/a", "/b/1", "/a/3/deep", "/a/"} {
		mustCreate(t, s, k, "v"+k)
	}
	res := mustList(t, s, "/a/", store.ListOptions{})
	wantKVs(t, `List("/a/")`, res.KVs,
		kv("/a/", "v/a/", 7, 7), kv("/a/1", "v/a/1", 3, 3), kv("/a/2", "v/a/2", 1, 1), kv("/a/3/deep", "v/a/3/deep", 6, 6))
	if res.More || res.Revision != 7 {
		t.Fatalf("List: More %v, Revision %d; want false, 7", res.More, res.Revision)
	}
	all := mustList(t, s, "", store.ListOptions{})
	var keys []string
	for _, kv := range all.KVs {
		keys = append(keys, kv.Key)
	}
	if want := "[/a /a/ /a/1 /a/2 /a/3/deep /ab/x /b/1]"; fmt.Sprint(keys) != want {
		t.Fatalf(`List("") keys = %v, want %s`, keys, want)
	}
	if res := mustList(t, s, "/c/", store.ListOptions{}); len(res.KVs) != 0 || res.More {
		t.Fatalf(`List("/c/") = %s, More %v; want nothing`, kvsString(res.KVs), res.More)
	}
}

func testListPaging(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	var want []store.KeyValue
	for i := range 10 {
		k := fmt.Sprintf("/p/%02d", i)
		want = append(want, mustCreate(t, s, k, "v"+k))
	}
	mustCreate(t, s, "/q/0", "other")
	mustCreate(t, s, "/o/9", "other")

	var got []store.KeyValue
	var mores []bool
	start := ""
	for range 10 {
		res := mustList(t, s, "/p/", store.ListOptions{StartKey: start, Limit: 3})
		if len(res.KVs) == 0 || len(res.KVs) > 3 {
			t.Fatalf("page of %d keys with Limit 3", len(res.KVs))
		}
		got = append(got, res.KVs...)
		mores = append(mores, res.More)
		if !res.More {
			break
		}
		start = res.KVs[len(res.KVs)-1].Key + "\x00"
	}
	wantKVs(t, "pages", got, want...)
	if fmt.Sprint(mores) != "[true true true false]" {
		t.Fatalf("More of the pages = %v, want [true true true false]", mores)
	}

	res := mustList(t, s, "/p/", store.ListOptions{Limit: 10})
	if len(res.KVs) != 10 || res.More {
		t.Fatalf("Limit 10 of 10 keys: %d keys, More %v; want 10, false", len(res.KVs), res.More)
	}
	res = mustList(t, s, "/p/", store.ListOptions{StartKey: "/p/05", Limit: 2})
	wantKVs(t, "StartKey /p/05", res.KVs, want[5:7]...)
	res = mustList(t, s, "/p/", store.ListOptions{StartKey: "/a"})
	wantKVs(t, "StartKey before the prefix", res.KVs, want...)
	res = mustList(t, s, "/p/", store.ListOptions{StartKey: "/p/99"})
	if len(res.KVs) != 0 || res.More {
		t.Fatalf("StartKey after the range: %s, More %v; want nothing", kvsString(res.KVs), res.More)
	}
}

func testListPast(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	a := mustCreate(t, s, "/h/a", "a1")                                  // updated after R
	b := mustCreate(t, s, "/h/b", "b1")                                  // deleted after R
	c := mustCreate(t, s, "/h/c", "c1")                                  // unchanged
	mustDelete(t, s, "/h/d", mustCreate(t, s, "/h/d", "d1").ModRevision) // deleted before R
	r := currentRevision(t, s)
	a2 := mustUpdate(t, s, "/h/a", "a2", a.ModRevision)
	r2 := currentRevision(t, s)
	a3 := mustUpdate(t, s, "/h/a", "a3", a2.ModRevision)
	mustDelete(t, s, "/h/b", b.ModRevision)
	e := mustCreate(t, s, "/h/e", "e1")  // created after R
	d2 := mustCreate(t, s, "/h/d", "d2") // created again after R
	mustCreate(t, s, "/h", "not in the prefix")
	mustCreate(t, s, "/i/a", "not in the prefix")

	res := mustList(t, s, "/h/", store.ListOptions{Revision: r})
	wantKVs(t, "List at R", res.KVs, a, b, c)
	if res.Revision != r || res.More {
		t.Fatalf("List at R: Revision %d, More %v; want %d, false", res.Revision, res.More, r)
	}
	res = mustList(t, s, "/h/", store.ListOptions{Revision: r2})
	wantKVs(t, "List after the first update", res.KVs, a2, b, c)
	res = mustList(t, s, "/h/", store.ListOptions{Revision: 1})
	wantKVs(t, "List at revision 1", res.KVs, a)
	res = mustList(t, s, "/h/", store.ListOptions{})
	wantKVs(t, "List latest", res.KVs, a3, c, d2, e)
	res = mustList(t, s, "/h/", store.ListOptions{Revision: res.Revision})
	wantKVs(t, "List at the current revision", res.KVs, a3, c, d2, e)
	res = mustList(t, s, "/h/", store.ListOptions{Revision: r, StartKey: "/h/b"})
	wantKVs(t, "List at R from /h/b", res.KVs, b, c)
	res = mustList(t, s, "/h/", store.ListOptions{Revision: r, StartKey: "/h/a\x00", Limit: 1})
	wantKVs(t, "List at R after /h/a, Limit 1", res.KVs, b)
	if !res.More {
		t.Fatal("List at R after /h/a, Limit 1: More = false, want true")
	}
}

func testListPastPaging(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	var want []store.KeyValue
	for i := range 6 {
		k := fmt.Sprintf("/p/%d", i)
		want = append(want, mustCreate(t, s, k, "v"+k))
	}
	first := mustList(t, s, "/p/", store.ListOptions{Limit: 2})
	wantKVs(t, "first page", first.KVs, want[:2]...)
	// Writes between pages must not show in the later pages.
	mustDelete(t, s, "/p/2", 0)
	mustCreate(t, s, "/p/2a", "new")
	mustUpdate(t, s, "/p/4", "changed", want[4].ModRevision)
	mustCreate(t, s, "/p/9", "new")
	got := first.KVs
	start := first.KVs[1].Key + "\x00"
	for more := first.More; more; {
		res := mustList(t, s, "/p/", store.ListOptions{Revision: first.Revision, StartKey: start, Limit: 2})
		if res.Revision != first.Revision {
			t.Fatalf("page Revision = %d, want %d", res.Revision, first.Revision)
		}
		got = append(got, res.KVs...)
		more = res.More
		start = res.KVs[len(res.KVs)-1].Key + "\x00"
	}
	wantKVs(t, "pages at the first page's revision", got, want...)
}

func testListFuture(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	kv := mustCreate(t, s, "/k", "v")
	_, err := s.List(t.Context(), "/", store.ListOptions{Revision: kv.ModRevision + 1})
	wantErr(t, "List at the next revision", err, store.ErrFutureRevision)
	res := mustList(t, s, "/", store.ListOptions{Revision: kv.ModRevision})
	wantKVs(t, "List at the current revision", res.KVs, kv)
}

func testListCompacted(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	a := mustCreate(t, s, "/a", "1")
	b := mustCreate(t, s, "/b", "1")
	a2 := mustUpdate(t, s, "/a", "2", a.ModRevision)
	mustDelete(t, s, "/b", b.ModRevision)
	mustCreate(t, s, "/c", "1")
	if err := s.Compact(t.Context(), a2.ModRevision); err != nil {
		t.Fatal(err)
	}
	if rev, err := s.CompactedRevision(t.Context()); err != nil || rev != a2.ModRevision {
		t.Fatalf("CompactedRevision = %d, %v; want %d", rev, err, a2.ModRevision)
	}
	_, err := s.List(t.Context(), "/", store.ListOptions{Revision: a2.ModRevision - 1})
	wantErr(t, "List before the compacted revision", err, store.ErrCompacted)
	res := mustList(t, s, "/", store.ListOptions{Revision: a2.ModRevision})
	wantKVs(t, "List at the compacted revision", res.KVs, a2, b)
}
