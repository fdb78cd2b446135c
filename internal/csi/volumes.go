package csi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"google.golang.org/grpc/status"
)

// NodeVolumes is the only way to stage, publish, unpublish and unstage
// volumes of one driver on this node. It enforces the spec's "RPC
// Interactions and Reference Counting" whatever the driver would accept:
//
//   - NodeStageVolume is sent only if the driver has STAGE_UNSTAGE_VOLUME;
//   - NodePublishVolume is sent only after Stage succeeded (ErrNotStaged);
//   - NodeUnstageVolume is sent only when no target is published or
//     uncertain (ErrStillPublished);
//   - a repeated Stage/Publish of what is already staged/published, and a
//     repeated Unpublish/Unstage of what is gone, send nothing;
//   - before each mutating RPC the volume (or target) is recorded as
//     StateUncertain on disk, and after OK as staged/published (or the
//     record is deleted). An InProgress error, or a crash of the agent,
//     leaves it uncertain, so the next Stage/Publish repeats the call and
//     the next Unpublish/Unstage undoes it, as the kubelet does. A Final or
//     Transient error on something that was absent before returns it to
//     absent; on something already recorded it stays uncertain.
//
// If the state cannot be written, the method returns that error (no gRPC
// status, so Classify says InProgress: call again) and memory keeps what the
// disk has.
//
// Calls for one volume are serialised (the spec asks the CO for at most one
// call in flight per volume); calls for different volumes run in parallel.
// One NodeVolumes per driver and state directory.
type NodeVolumes struct {
	client *Client
	dir    stateDir
	locks  keyedLock

	mu   sync.Mutex
	vols map[string]*VolumeState // never mutated in place: replaced by clones
}

// OpenNodeVolumes loads the records in dir (created if missing) and returns
// a NodeVolumes that resumes from them.
func OpenNodeVolumes(dir string, client *Client) (*NodeVolumes, error) {
	d := stateDir(dir)
	vols, err := d.load()
	if err != nil {
		return nil, err
	}
	return &NodeVolumes{client: client, dir: d, vols: vols}, nil
}

// Volume returns the recorded state of a volume.
func (n *NodeVolumes) Volume(volumeID string) (VolumeState, bool) {
	v := n.get(volumeID)
	if v == nil {
		return VolumeState{}, false
	}
	return *v.clone(), true
}

// Volumes returns every recorded volume, sorted by ID: after a restart, the
// agent compares them with the pods it runs and unpublishes/unstages the
// rest.
func (n *NodeVolumes) Volumes() []VolumeState {
	n.mu.Lock()
	out := make([]VolumeState, 0, len(n.vols))
	for _, v := range n.vols {
		out = append(out, *v.clone())
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out
}

// Stage makes the volume staged: NodeStageVolume if the driver stages and
// the volume is not staged yet, nothing otherwise. It creates
// req.StagingPath first (the spec makes that the CO's job), and removes it
// again (if empty) when a first stage fails without effect.
func (n *NodeVolumes) Stage(ctx context.Context, req StageRequest) error {
	const op = OpNodeStageVolume
	if req.VolumeID == "" || !filepath.IsAbs(req.StagingPath) {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: fmt.Errorf("%w: missing volume ID or absolute staging path", ErrInvalidRequest)}
	}
	unlock, err := n.lock(ctx, op, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()

	cur := n.get(req.VolumeID)
	if cur != nil && cur.StagingPath != "" && cur.StagingPath != req.StagingPath {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: fmt.Errorf("%w: staging path %q differs from recorded %q",
			ErrInvalidRequest, req.StagingPath, cur.StagingPath)}
	}
	if cur != nil && cur.Stage == StateStaged {
		return nil
	}
	caps, err := n.client.NodeCapabilities(ctx)
	if err != nil {
		return err
	}
	next := &VolumeState{VolumeID: req.VolumeID, Targets: map[string]State{}}
	if cur != nil {
		next = cur.clone()
	}
	if !caps.StageUnstageVolume && cur == nil {
		next.Stage = StateStaged
		return n.put(op, next)
	}
	if err := os.MkdirAll(req.StagingPath, 0o750); err != nil {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: err}
	}
	next.Stage, next.StagingPath = StateUncertain, req.StagingPath
	if err := n.put(op, next); err != nil {
		return err
	}
	if err := n.client.nodeStage(ctx, req); err != nil {
		if n.settleFailure(op, req.VolumeID, cur, err) && cur == nil {
			// Nothing is staged or recorded: the directory made above
			// goes too (only if empty), as the kubelet removes its
			// globalmount after a MountDevice that failed for good.
			_ = os.Remove(req.StagingPath)
		}
		return err
	}
	done := next.clone()
	done.Stage = StateStaged
	return n.put(op, done)
}

// Publish makes the volume published at req.TargetPath: NodePublishVolume
// with the recorded staging path, unless the target is already published.
// The volume must be staged (ErrNotStaged otherwise; nothing is sent). It
// creates the target's parent directory; the driver creates the target.
func (n *NodeVolumes) Publish(ctx context.Context, req PublishRequest) error {
	const op = OpNodePublishVolume
	if req.VolumeID == "" || !filepath.IsAbs(req.TargetPath) {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: fmt.Errorf("%w: missing volume ID or absolute target path", ErrInvalidRequest)}
	}
	unlock, err := n.lock(ctx, op, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()

	cur := n.get(req.VolumeID)
	if cur == nil || cur.Stage != StateStaged {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: ErrNotStaged}
	}
	prev, had := cur.Targets[req.TargetPath]
	if prev == StatePublished {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o750); err != nil {
		return &Error{Op: op, VolumeID: req.VolumeID, Err: err}
	}
	next := cur.clone()
	next.Targets[req.TargetPath] = StateUncertain
	if err := n.put(op, next); err != nil {
		return err
	}
	if err := n.client.nodePublish(ctx, req, cur.StagingPath); err != nil {
		if !had {
			n.settleFailure(op, req.VolumeID, cur, err)
		}
		return err
	}
	done := next.clone()
	done.Targets[req.TargetPath] = StatePublished
	return n.put(op, done)
}

// Unpublish makes the target unpublished: NodeUnpublishVolume if the target
// is recorded (published or uncertain), nothing otherwise. On any error the
// target stays recorded as uncertain.
func (n *NodeVolumes) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	const op = OpNodeUnpublishVolume
	unlock, err := n.lock(ctx, op, volumeID)
	if err != nil {
		return err
	}
	defer unlock()

	cur := n.get(volumeID)
	if cur == nil {
		return nil
	}
	st, had := cur.Targets[targetPath]
	if !had {
		return nil
	}
	next := cur.clone()
	if st != StateUncertain {
		next.Targets[targetPath] = StateUncertain
		if err := n.put(op, next); err != nil {
			return err
		}
	}
	if err := n.client.nodeUnpublish(ctx, volumeID, targetPath); err != nil {
		return err
	}
	done := next.clone()
	delete(done.Targets, targetPath)
	return n.put(op, done)
}

// Unstage forgets the volume: NodeUnstageVolume if the driver staged it
// (staged or uncertain), then deletes the record and, best effort, the
// empty staging directory. It refuses with ErrStillPublished while any
// target is recorded. On an error the volume stays recorded as uncertain.
func (n *NodeVolumes) Unstage(ctx context.Context, volumeID string) error {
	const op = OpNodeUnstageVolume
	unlock, err := n.lock(ctx, op, volumeID)
	if err != nil {
		return err
	}
	defer unlock()

	cur := n.get(volumeID)
	if cur == nil {
		return nil
	}
	if len(cur.Targets) > 0 {
		return &Error{Op: op, VolumeID: volumeID, Err: ErrStillPublished}
	}
	if cur.StagingPath == "" { // the driver did not stage
		return n.drop(op, volumeID)
	}
	if cur.Stage != StateUncertain {
		next := cur.clone()
		next.Stage = StateUncertain
		if err := n.put(op, next); err != nil {
			return err
		}
	}
	if err := n.client.nodeUnstage(ctx, volumeID, cur.StagingPath); err != nil {
		return err
	}
	if err := n.drop(op, volumeID); err != nil {
		return err
	}
	_ = os.Remove(cur.StagingPath) // only if empty; the driver unmounted it
	return nil
}

// settleFailure handles a failed Stage or Publish of something that was
// absent before (prev is the volume record before the call): unless the
// driver may still be working (InProgress), the call had no effect, so the
// uncertain record written before the call is rolled back. If the rollback
// cannot be written, the record stays uncertain, which is safe. It reports
// whether the record was rolled back.
func (n *NodeVolumes) settleFailure(op Op, volumeID string, prev *VolumeState, err error) bool {
	if Classify(err) == InProgress {
		return false
	}
	if prev == nil {
		return n.drop(op, volumeID) == nil
	}
	return n.put(op, prev) == nil
}

func (n *NodeVolumes) get(volumeID string) *VolumeState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.vols[volumeID]
}

// put writes v to disk and then to memory, so memory never claims more
// than the disk does.
func (n *NodeVolumes) put(op Op, v *VolumeState) error {
	if err := n.dir.save(v); err != nil {
		return &Error{Op: op, VolumeID: v.VolumeID, Err: fmt.Errorf("persist volume state: %w", err)}
	}
	n.mu.Lock()
	n.vols[v.VolumeID] = v
	n.mu.Unlock()
	return nil
}

func (n *NodeVolumes) drop(op Op, volumeID string) error {
	if err := n.dir.remove(volumeID); err != nil {
		return &Error{Op: op, VolumeID: volumeID, Err: fmt.Errorf("persist volume state: %w", err)}
	}
	n.mu.Lock()
	delete(n.vols, volumeID)
	n.mu.Unlock()
	return nil
}

func (n *NodeVolumes) lock(ctx context.Context, op Op, volumeID string) (func(), error) {
	if volumeID == "" {
		return nil, &Error{Op: op, Err: fmt.Errorf("%w: missing volume ID", ErrInvalidRequest)}
	}
	unlock, err := n.locks.lock(ctx, volumeID)
	if err != nil {
		// CANCELED or DEADLINE_EXCEEDED: nothing was sent; InProgress
		// tells the caller to try the same call again.
		return nil, &Error{Op: op, VolumeID: volumeID, Err: status.FromContextError(err).Err()}
	}
	return unlock, nil
}

// keyedLock is a mutex per key whose wait honours a context.
type keyedLock struct {
	mu sync.Mutex
	m  map[string]*keyEntry
}

type keyEntry struct {
	ch   chan struct{} // holds a token while locked
	refs int
}

func (k *keyedLock) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			k.release(key, e)
		}, nil
	case <-ctx.Done():
		k.release(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyedLock) release(key string, e *keyEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.m, key)
	}
}
