package storetest

import (
	"testing"

	"github.com/moorage/moorage/internal/store"
)

func kvTests() []test {
	return []test{
		{"an empty store is at revision 0", testEmpty},
		{"create then get returns the value at one revision", testCreateGet},
		{"create of an existing key fails with ErrExists and changes nothing", testCreateExists},
		{"get of a missing key fails with ErrNotFound", testGetMissing},
		{"update with the current revision succeeds and keeps CreateRevision", testUpdate},
		{"update with a stale revision fails with ErrConflict", testUpdateConflict},
		{"update of a missing key fails with ErrNotFound", testUpdateMissing},
		{"delete with the current revision returns the last value at the delete's revision", testDelete},
		{"delete with a stale revision fails with ErrConflict", testDeleteConflict},
		{"delete with revision 0 is unconditional", testDeleteUnconditional},
		{"delete of a missing key fails with ErrNotFound", testDeleteMissing},
		{"revisions are global and each successful write takes the next one", testRevisions},
		{"a key created again after a delete gets a new CreateRevision", testRecreate},
		{"values passed in and returned are not shared with the store", testValuesOwned},
	}
}

func testEmpty(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	if rev := currentRevision(t, s); rev != 0 {
		t.Fatalf("CurrentRevision = %d, want 0", rev)
	}
	res := mustList(t, s, "", store.ListOptions{})
	if len(res.KVs) != 0 || res.More || res.Revision != 0 {
		t.Fatalf("List = %+v, want nothing at revision 0", res)
	}
}

func testCreateGet(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	wantKV(t, "Create", created, kv("/k", "v1", 1, 1))
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, created)
	if rev := currentRevision(t, s); rev != 1 {
		t.Fatalf("CurrentRevision = %d, want 1", rev)
	}
}

func testCreateExists(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	_, err := s.Create(t.Context(), "/k", []byte("v2"))
	wantErr(t, "second Create", err, store.ErrExists)
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, created)
	if rev := currentRevision(t, s); rev != created.ModRevision {
		t.Fatalf("CurrentRevision = %d after a failed create, want %d", rev, created.ModRevision)
	}
}

func testGetMissing(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	mustCreate(t, s, "/a", "v")
	_, err := s.Get(t.Context(), "/b")
	wantErr(t, "Get", err, store.ErrNotFound)
}

func testUpdate(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	mustCreate(t, s, "/other", "x")
	created := mustCreate(t, s, "/k", "v1")
	updated := mustUpdate(t, s, "/k", "v2", created.ModRevision)
	wantKV(t, "Update", updated, kv("/k", "v2", 2, 3))
	again := mustUpdate(t, s, "/k", "v3", updated.ModRevision)
	wantKV(t, "second Update", again, kv("/k", "v3", 2, 4))
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, again)
}

func testUpdateConflict(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	updated := mustUpdate(t, s, "/k", "v2", created.ModRevision)
	_, err := s.Update(t.Context(), "/k", []byte("v3"), created.ModRevision)
	wantErr(t, "Update with a stale revision", err, store.ErrConflict)
	_, err = s.Update(t.Context(), "/k", []byte("v3"), 0)
	wantErr(t, "Update with revision 0", err, store.ErrConflict)
	_, err = s.Update(t.Context(), "/k", []byte("v3"), updated.ModRevision+1)
	wantErr(t, "Update with a future revision", err, store.ErrConflict)
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, updated)
	if rev := currentRevision(t, s); rev != updated.ModRevision {
		t.Fatalf("CurrentRevision = %d after failed updates, want %d", rev, updated.ModRevision)
	}
}

func testUpdateMissing(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/a", "v")
	_, err := s.Update(t.Context(), "/b", []byte("v"), created.ModRevision)
	wantErr(t, "Update", err, store.ErrNotFound)
	_, err = s.Get(t.Context(), "/b")
	wantErr(t, "Get", err, store.ErrNotFound)
}

func testDelete(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	updated := mustUpdate(t, s, "/k", "v2", created.ModRevision)
	deleted := mustDelete(t, s, "/k", updated.ModRevision)
	wantKV(t, "Delete", deleted, kv("/k", "v2", 1, 3))
	_, err := s.Get(t.Context(), "/k")
	wantErr(t, "Get after Delete", err, store.ErrNotFound)
	if rev := currentRevision(t, s); rev != 3 {
		t.Fatalf("CurrentRevision = %d, want 3", rev)
	}
}

func testDeleteConflict(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	updated := mustUpdate(t, s, "/k", "v2", created.ModRevision)
	_, err := s.Delete(t.Context(), "/k", created.ModRevision)
	wantErr(t, "Delete with a stale revision", err, store.ErrConflict)
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, updated)
}

func testDeleteUnconditional(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	mustUpdate(t, s, "/k", "v2", created.ModRevision)
	deleted := mustDelete(t, s, "/k", 0)
	wantKV(t, "Delete", deleted, kv("/k", "v2", 1, 3))
	_, err := s.Delete(t.Context(), "/k", 0)
	wantErr(t, "second Delete", err, store.ErrNotFound)
}

func testDeleteMissing(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/a", "v")
	_, err := s.Delete(t.Context(), "/b", created.ModRevision)
	wantErr(t, "Delete", err, store.ErrNotFound)
	if rev := currentRevision(t, s); rev != created.ModRevision {
		t.Fatalf("CurrentRevision = %d after a failed delete, want %d", rev, created.ModRevision)
	}
}

func testRevisions(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	a := mustCreate(t, s, "/a", "1")
	b := mustCreate(t, s, "/b", "1")
	if _, err := s.Create(t.Context(), "/a", []byte("x")); err == nil {
		t.Fatal("Create of an existing key succeeded")
	}
	a2 := mustUpdate(t, s, "/a", "2", a.ModRevision)
	if _, err := s.Update(t.Context(), "/b", []byte("x"), b.ModRevision+100); err == nil {
		t.Fatal("Update with a wrong revision succeeded")
	}
	bDel := mustDelete(t, s, "/b", 0)
	c := mustCreate(t, s, "/c", "1")
	got := []int64{a.ModRevision, b.ModRevision, a2.ModRevision, bDel.ModRevision, c.ModRevision}
	for i, rev := range got {
		if rev != int64(i+1) {
			t.Fatalf("revisions of successive writes = %v, want 1, 2, 3, 4, 5", got)
		}
	}
	if rev := currentRevision(t, s); rev != 5 {
		t.Fatalf("CurrentRevision = %d, want 5", rev)
	}
}

func testRecreate(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	created := mustCreate(t, s, "/k", "v1")
	updated := mustUpdate(t, s, "/k", "v2", created.ModRevision)
	mustDelete(t, s, "/k", updated.ModRevision)
	again := mustCreate(t, s, "/k", "v3")
	wantKV(t, "Create after Delete", again, kv("/k", "v3", 4, 4))
	later := mustUpdate(t, s, "/k", "v4", again.ModRevision)
	wantKV(t, "Update of the new key", later, kv("/k", "v4", 4, 5))
}

func testValuesOwned(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	buf := []byte("v1")
	created, err := s.Create(t.Context(), "/k", buf)
	if err != nil {
		t.Fatal(err)
	}
	buf[0] = 'X'
	created.Value[0] = 'Y'
	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	got.Value[0] = 'Z'
	got, err = s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != "v1" {
		t.Fatalf("value = %q after the caller changed its slices, want %q", got.Value, "v1")
	}
	res := mustList(t, s, "/", store.ListOptions{})
	res.KVs[0].Value[0] = 'W'
	res = mustList(t, s, "/", store.ListOptions{})
	if string(res.KVs[0].Value) != "v1" {
		t.Fatalf("listed value = %q after the caller changed a listed one, want %q", res.KVs[0].Value, "v1")
	}
}
