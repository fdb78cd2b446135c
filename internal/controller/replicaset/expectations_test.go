package replicaset

import (
	"testing"
	"time"
)

func TestExpectations(t *testing.T) {
	clock := now
	e := newExpectations()
	e.now = func() time.Time { return clock }
	const owner = "default/web"

	if !e.satisfied(owner) {
		t.Fatal("an owner that expects nothing may not act")
	}
	e.expectCreations(owner, 2)
	if e.satisfied(owner) {
		t.Fatal("an owner waiting for 2 creates may act")
	}
	e.creationObserved(owner)
	if e.satisfied(owner) {
		t.Fatal("an owner waiting for 1 create may act")
	}
	e.creationObserved(owner)
	if !e.satisfied(owner) {
		t.Fatal("an owner that saw its creates may not act")
	}

	e.expectDeletions(owner, []string{"default/a", "default/b"})
	e.deletionObserved(owner, "default/other") // not one it deleted
	e.deletionObserved(owner, "default/a")
	e.deletionObserved(owner, "default/a") // seen twice, counted once
	if e.satisfied(owner) {
		t.Fatal("an owner waiting for the deletion of b may act")
	}
	e.deletionObserved(owner, "default/b")
	if !e.satisfied(owner) {
		t.Fatal("an owner that saw its deletes may not act")
	}

	e.expectCreations(owner, 1)
	clock = clock.Add(expectationsTimeout + time.Second)
	if !e.satisfied(owner) {
		t.Fatal("expectations never expire")
	}
	e.expectCreations(owner, 1)
	e.forget(owner)
	if !e.satisfied(owner) {
		t.Fatal("a forgotten owner may not act")
	}
}
