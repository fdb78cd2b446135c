// Package etcd is the store.Store backend on an etcd v3 cluster (servers 3.4
// and newer), for `moorage server --etcd-endpoints`.
//
// # Keys and revisions
//
// Store key k is etcd key Prefix+k (Prefix defaults to "/moorage/"), so one
// etcd can be shared. The etcd key Prefix itself, which no store key maps to
// because store keys are non-empty, holds the compacted revision (see
// Compaction); List and Watch skip it.
//
// The store's revision counter is etcd's single, global one, offset by one:
// store revision r is etcd revision r+1 (revOffset). A new etcd is at
// revision 1 before its first write, so a store on its own etcd numbers its
// writes 1, 2, 3... as the contract says. Revisions strictly increase but,
// unlike the embedded store's, may skip values: every write to the same etcd
// takes one, including other clients' writes under other prefixes and the
// store's own record of a compaction.
//
// # Writes and reads
//
// Create, Update and Delete are each one etcd transaction conditioned on
// the contract's precondition (Create: the key's CreateRevision is 0;
// Update and Delete: its ModRevision is the expected one; a Delete expecting
// 0 has no condition). Update and Delete read the key in the Else branch to
// tell store.ErrNotFound from store.ErrConflict. A failed precondition
// writes nothing and takes no revision. Reads (Get, List, CurrentRevision)
// are linearizable. A List at a past revision is an etcd range read at that
// revision, so pages at one revision are one consistent snapshot. etcd's
// ErrCompacted and ErrFutureRev become store.ErrCompacted and
// store.ErrFutureRevision; after Close every call fails with store.ErrClosed.
//
// # Watches
//
// A Watch reads the current and compacted revisions (one read), then runs an
// etcd watch of its prefix from the revision after afterRevision (after the
// current one for 0), with previous values: a put whose CreateRevision is
// its ModRevision is Created, any other put Updated, a delete Deleted with
// the previous value. Watch returns once etcd has created that watch. One goroutine per watcher reads etcd's responses as
// they come and queues the events on the caller's bounded buffer
// (Config.WatchBuffer):
//
//   - a new write (one after the revision current when Watch was called)
//     that finds the buffer full ends the watch with store.ErrSlowConsumer,
//     as the contract says;
//   - history (up to that revision) comes from etcd in batches of up to
//     1000 revisions, usually more than the buffer: when the buffer is full
//     the watcher cancels its etcd watch, so the client buffers nothing more
//     for it, hands over the rest of the batch at the reader's pace, and
//     watches again from there. So a reader that keeps reading gets any
//     history, and one that stops holds at most one batch.
//
// The watcher records the etcd revision of the last event it queued and
// drops any event at or below it: etcd sends all events of a revision in
// one response, so that drops exactly what a resumed etcd watch sends
// twice and never a new event.
//
// Member failures: the client resumes a watch whose stream broke (a member
// killed or restarted, a reconnect) by itself, from the revision after the
// last it received. Watches use clientv3.WithRequireLeader, so a member that
// loses its leader (a partition, lost quorum) ends them with ErrNoLeader
// rather than keeping them open and silent. The watcher then opens a new
// etcd watch from the revision after the last one it queued, with backoff
// (50ms up to 2s), as many times as it takes. We re-watch here rather than
// end the watch with an error because the contract has no such ending: the
// API server ends a client's watch on any error but store.ErrSlowConsumer,
// so a leader election would break every client's watch (kubectl get -w
// exits) although nothing was lost; and the new etcd watch may reach a member
// that does have a leader. A watch thus ends only when its context ends,
// the store is closed, its reader is too slow, or the history it still has to
// deliver was compacted (store.ErrCompacted). A quiet watch that must be
// reopened after a compaction past its last event ends with
// store.ErrCompacted although it missed nothing (as in kube-apiserver); its
// client lists again.
//
// # Compaction
//
// etcd does not report its compacted revision, so Compact records it as
// kube-apiserver records compact_rev_key: it sets the meta key (Prefix) to
// the etcd revision with a compare-and-swap (concurrent compactors never move
// it back), then calls etcd's Compact, which is in effect (older reads and
// watches fail) as soon as it returns; the space is freed in the
// background, so the call does not wait for it (no WithCompactPhysical).
// CompactedRevision is the recorded revision, or a later one etcd reported
// to a watch of this store (another client compacted). etcd compacts its
// whole keyspace: compacting one store compacts every store and client
// sharing the etcd.
package etcd
