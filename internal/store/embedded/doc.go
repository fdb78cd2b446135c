// Package embedded is the default store.Store backend: one bbolt file, no
// other process.
//
// # Layout
//
// The file holds three buckets:
//
//	kv    key -> createRev, modRev, value        the current value of each live key
//	log   rev (8 bytes, big-endian) -> event     one entry per write, in revision order
//	meta  "rev" -> last revision written
//	      "compacted" -> compacted revision C (log entries <= C may be gone)
//	      "version" -> file format version
//
// A log entry holds the event type, the key, the key's create revision, the
// value after the write (the last value for a delete), and the key's previous
// mod revision and value (none for a create). The log is what Watch replays
// and what List at a past revision undoes, so both work for every revision
// from the compacted one on, across restarts.
//
// # Writes
//
// Create, Update and Delete queue a request for the single writer goroutine
// and wait for its answer. The writer group-commits: it takes every queued
// request (at most maxBatch), applies them in queue order in one bbolt
// read-write transaction, giving each successful one the next revision (a
// request whose precondition fails gets its error and takes no revision; the
// others in the batch are unaffected), writes meta "rev", and commits, which
// fsyncs. Only then does it publish the batch's events to the watchers, in
// revision order, and answer the callers. So:
//
//   - no write is acknowledged before it is durable, and a crash loses only
//     unacknowledged writes, never a part of a batch (bbolt commits are atomic);
//   - kv, log and meta "rev" always agree: they change in the same transaction;
//   - many concurrent writers share one fsync.
//
// A write whose context ends before the writer takes it is not applied; one
// whose context ends while it waits for the commit may or may not be applied
// (the caller sees the context's error either way, as with etcd).
//
// # Reads
//
// Get and a latest List each read one bbolt read transaction. A List at a
// past revision R (compacted <= R < current) does so too: it reads the
// current values of the range, then the log entries after R; the first such
// entry for a key gives the key's state at R (absent for a create, the
// previous value otherwise), which replaces the current one. Paging walks the
// current keys and those replaced ones merged in key order, so a page costs
// the page plus the log since R, not the whole range.
//
// # Watches
//
// The writer publishes each committed batch to a hub under the hub's mutex;
// the hub records the last published revision P. Watch registers under that
// same mutex: it notes P, and from then on receives every published event
// with a revision > P on its live channel (bounded: Options.WatchBuffer). The
// watcher's goroutine first replays the log entries in (afterRevision, P],
// read from bbolt in short chunked transactions, then forwards live events.
// Every revision is therefore delivered exactly once, from the log or live,
// in order, and a long history needs no large buffer. The publisher never
// blocks: a watcher whose live channel is full is ended with
// store.ErrSlowConsumer (its undelivered events are dropped; its reader
// resumes from the last revision it saw). Each watcher gets its own copy of
// every value.
//
// # Compaction
//
// Compact(C) first records C in meta, then deletes the log entries <= C in
// transactions of defaultCompactChunk entries, so that writers wait for at most one
// chunk. A reader checks C in the same transaction in which it reads the log,
// so it never sees a partly deleted history as complete. There is no
// automatic compaction: the API server calls Compact.
package embedded
