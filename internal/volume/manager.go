// Package volume prepares a pod's volumes on its node, as kubelet's volume
// plugins do for the in-pod types: emptyDir, hostPath, configMap, secret,
// downwardAPI, projected, and claims (persistentVolumeClaim, ephemeral)
// bound to hostPath, local or CSI PersistentVolumes, in both volume modes
// (CSI volumes through the drivers registered on the node: csi.go).
//
// Design: each volume lives where kubelet keeps it,
// <root>/pods/<pod uid>/volumes/<plugin dir>/<volume name> (subPath binds
// under volume-subpaths/, one-time-setup markers under plugins/), and the
// disk is the only state but for a cache of issued tokens. SetUp
// recomputes everything from the pod and the API and changes only what
// differs, so it is idempotent across agent restarts; TearDown finds what
// to unmount in /proc/self/mountinfo, not in memory, and removes nothing
// behind a mount. configMap, secret, downwardAPI and projected contents go
// through an atomic writer (a new hidden ..<timestamp> directory, then one
// rename of the ..data symlink), so a container never sees half an update.
package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
)

// Getter is what the plugins read from the API. The agent backs it with
// informer listers or a client. A missing object must be reported with an
// error for which apierrors.IsNotFound is true: optional sources depend on
// it. Implementations must be safe for concurrent use.
type Getter interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	PersistentVolumeClaim(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	PersistentVolume(ctx context.Context, name string) (*corev1.PersistentVolume, error)
}

// TokenSource issues service account tokens for projected
// serviceAccountToken sources, as the serviceaccounts/token subresource
// (TokenRequest) does; client-go's ServiceAccounts(ns).CreateToken fits.
// The Manager caches what it returns and asks again only when upstream's
// kubelet would refresh (past 80% of the lifetime, or after 24 hours).
type TokenSource interface {
	Token(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
}

// Options describe the node the Manager runs on.
type Options struct {
	// NodeName and NodeLabels are matched against a PersistentVolume's
	// node affinity (metadata.name for matchFields, labels for
	// matchExpressions). NodeLabels is called at each check: CSI drivers
	// registering later add their topology labels.
	NodeName   string
	NodeLabels func() map[string]string
	// NodeAllocatable is the node's allocatable resources: its memory is
	// the default size of a memory-backed emptyDir (secret and projected
	// volumes included), and cpu, memory and ephemeral-storage stand in
	// for a container's missing limits in downwardAPI resourceFieldRefs,
	// as upstream. Without memory, tmpfs gets the kernel's default size.
	NodeAllocatable corev1.ResourceList
	// TokenSource issues projected service account tokens; without one, a
	// pod with a serviceAccountToken source fails to set up with a message
	// that says so.
	TokenSource TokenSource
	// Now is the clock for token refreshes; time.Now when nil.
	Now func() time.Time
	// CSIDrivers gives the node side of a CSI driver registered on this
	// node, by driver name: the NodeVolumes through which its volumes are
	// staged and published (one per driver, as csi.OpenNodeVolumes
	// documents). nil, or false, means the driver is not registered:
	// SetUp of a volume of that driver fails with the kubelet's "driver
	// name ... not found in the list of registered CSI drivers" (and
	// succeeds on a later SetUp once it is), and TearDown of a pod with a
	// volume of that driver still published keeps the pod's directory and
	// fails until it is.
	CSIDrivers func(driver string) (*csi.NodeVolumes, bool)
	// CSIDriver reads the CSIDriver object (storage.k8s.io/v1) of a
	// driver, for its spec.fsGroupPolicy. nil, or a nil object, or an
	// error for which apierrors.IsNotFound is true, means there is none:
	// the kubelet's default then applies (ReadWriteOnceWithFSType). Other
	// errors fail the volume's SetUp (retried on the next one).
	CSIDriver func(ctx context.Context, name string) (*storagev1.CSIDriver, error)
	// VolumeAttachment reads a VolumeAttachment (storage.k8s.io/v1) by
	// name. When set, a CSI volume whose driver requires attach (its
	// CSIDriver's attachRequired, or no CSIDriver object) is staged and
	// published only once its VolumeAttachment to this node reports
	// attached, with the attachment's metadata as publish context, as the
	// kubelet does (attach.go). nil: volumes are staged without waiting
	// and without publish context.
	VolumeAttachment func(ctx context.Context, name string) (*storagev1.VolumeAttachment, error)
	// ReportVolumesInUse, when set, asks the agent to write the node's
	// status.volumesInUse now (VolumesInUse, then
	// MarkVolumesReportedInUse once written). A volume that must be
	// attached is then staged only once it has been reported in use, so
	// that the attach/detach controller never detaches it under a mount.
	ReportVolumesInUse func()
	// AttachWait bounds how long one SetUp waits for a volume's
	// attachment (and report in use) before it fails, to be tried again
	// on the next; 0 means 10 s.
	AttachWait time.Duration
	// NodeExpand, when set, is handed every claim's CSI volume whose node
	// expansion is pending, after SetUp published it for a pod: the
	// kubelet's part of volume expansion (csi_expand.go). Its error fails
	// the volume's SetUp. nil: no node expansion.
	NodeExpand func(ctx context.Context, e *NodeExpansion) error
}

// Mounted is where one volume of a pod lives on the host, for the agent to
// bind into the pod's containers.
type Mounted struct {
	// HostPath is a directory (or, for hostPath volumes, whatever the host
	// path is), or a block device when Block is set.
	HostPath string
	// ReadOnly: the volume must be bound read-only into every container
	// (atomic-writer volumes always are, as upstream; claims with readOnly).
	ReadOnly bool
	// Block: HostPath is a block device, for volumeDevices.
	Block bool
}

// Error is why one volume of a pod could not be set up. SetUp and Update
// return one per failed volume (joined with errors.Join). Its text follows
// upstream's event messages, e.g.
// `MountVolume.SetUp failed for volume "config" : configmap "app" not found`.
type Error struct {
	Volume string
	// Op is upstream's operation name ("MountVolume.SetUp",
	// "MountVolume.NodeAffinity check"), or "" when the volume could not
	// be resolved or is of a type this package does not handle.
	Op  string
	Err error
}

func (e *Error) Error() string {
	if e.Op == "" {
		return fmt.Sprintf("volume %q: %v", e.Volume, e.Err)
	}
	return fmt.Sprintf("%s failed for volume %q : %v", e.Op, e.Volume, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// EventReason is the reason of the Warning event for a set-up error:
// FailedMount, or what upstream's kubelet uses for the error's kind.
func EventReason(err error) string {
	var unsupported *UnsupportedMountOptionError
	if errors.As(err, &unsupported) {
		return "UnsupportedMountOption"
	}
	// Block volumes' operations (MapVolume.SetUpDevice,
	// MapVolume.MapPodDevice) are reported as FailedMapVolume, as
	// upstream's operation generator does.
	var e *Error
	if errors.As(err, &e) && strings.HasPrefix(e.Op, "MapVolume.") {
		return "FailedMapVolume"
	}
	return "FailedMount"
}

// UnsupportedMountOptionError is a volume with mount options whose type
// takes none (hostPath), as upstream's kubelet reports it.
type UnsupportedMountOptionError struct{ Volume string }

func (e *UnsupportedMountOptionError) Error() string {
	return fmt.Sprintf("Mount options are not supported for this volume type for volume %q", e.Volume)
}

func setUpError(volume string, err error) error {
	return &Error{Volume: volume, Op: "MountVolume.SetUp", Err: err}
}

// Plugin directories under <root>/pods/<uid>/volumes, kubelet's names.
const (
	pluginEmptyDir    = "kubernetes.io~empty-dir"
	pluginConfigMap   = "kubernetes.io~configmap"
	pluginSecret      = "kubernetes.io~secret"
	pluginDownwardAPI = "kubernetes.io~downward-api"
	pluginProjected   = "kubernetes.io~projected"
	pluginLocal       = "kubernetes.io~local-volume"
	pluginCSI         = "kubernetes.io~csi"
)

// Manager sets up and tears down the volumes of the pods on one node. Its
// methods are safe for concurrent use; calls for one pod are serialized.
type Manager struct {
	root   string
	get    Getter
	opts   Options
	locks  podLocks
	tokens tokenCache
	// devices serializes the global mounts of local block devices, which
	// pods share.
	devices sync.Mutex
	// csiVolumes serializes, per CSI volume (driver and handle), a pod's
	// stage+publish against another pod's unpublish+unstage, so that a
	// volume is never unstaged between one pod's Stage and Publish.
	csiVolumes keyedLocks[string]
	// inUse holds the volumes last reported in the node's
	// status.volumesInUse (MarkVolumesReportedInUse).
	inUse reportedInUse
}

// NewManager returns a Manager keeping pod volumes under root (kubelet's
// /var/lib/kubelet), which should be a real path (no symlinks): mount
// points are recognised by their path in /proc/self/mountinfo.
func NewManager(root string, get Getter, opts Options) *Manager {
	root = filepath.Clean(root)
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AttachWait == 0 {
		opts.AttachWait = 10 * time.Second
	}
	return &Manager{root: root, get: get, opts: opts}
}

// SetUp prepares every volume of the pod and says where each lives, by
// volume name. It is idempotent: calling it again (after an agent restart,
// or on a resync) changes nothing that is already right. A volume that
// fails does not stop the others: the map holds those that succeeded and
// the error joins one *Error per failure.
func (m *Manager) SetUp(ctx context.Context, pod *corev1.Pod) (map[string]Mounted, error) {
	if err := checkPodUID(pod.UID); err != nil {
		return nil, err
	}
	defer m.locks.lock(pod.UID)()
	out := make(map[string]Mounted, len(pod.Spec.Volumes))
	var errs []error
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if err := ctx.Err(); err != nil {
			return out, errors.Join(append(errs, err)...)
		}
		mt, err := m.setUpVolume(ctx, pod, vol)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[vol.Name] = mt
	}
	return out, errors.Join(errs...)
}

func (m *Manager) setUpVolume(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume) (Mounted, error) {
	if err := checkName(vol.Name); err != nil {
		return Mounted{}, &Error{Volume: vol.Name, Err: err}
	}
	vs := &vol.VolumeSource
	switch {
	case vs.EmptyDir != nil:
		return m.setUpEmptyDir(pod, vol.Name, vs.EmptyDir)
	case vs.HostPath != nil:
		if err := checkHostPath(vs.HostPath.Path, vs.HostPath.Type); err != nil {
			return Mounted{}, setUpError(vol.Name, err)
		}
		return Mounted{HostPath: vs.HostPath.Path}, nil
	case vs.ConfigMap != nil, vs.Secret != nil, vs.DownwardAPI != nil, vs.Projected != nil:
		return m.setUpData(ctx, pod, vol, false)
	case vs.PersistentVolumeClaim != nil:
		return m.setUpClaim(ctx, pod, vol.Name, vs.PersistentVolumeClaim.ClaimName, vs.PersistentVolumeClaim.ReadOnly, false)
	case vs.Ephemeral != nil:
		// The ephemeral volume controller names the claim <pod>-<volume>.
		return m.setUpClaim(ctx, pod, vol.Name, pod.Name+"-"+vol.Name, false, true)
	default:
		if mt, ok, err := m.setUpMigratedInline(ctx, pod, vol); ok { // migration.go
			return mt, err
		}
		if kind := sourceKind(vs); kind != "csi" {
			return Mounted{}, &Error{Volume: vol.Name, Err: fmt.Errorf("%s volumes cannot be mounted in-tree by moorage: reach this storage through a CSI driver", kind)}
		}
		return Mounted{}, &Error{Volume: vol.Name, Err: errors.New("inline csi volumes are not supported yet")}
	}
}

// Update rewrites the contents of the pod's configMap, secret, downwardAPI
// and projected volumes whose sources changed (the agent calls it
// periodically or on informer events). Running containers see the change
// through the ..data symlink swap; subPath mounts of these volumes keep
// what they had, as upstream. Volumes that are not set up are skipped, so
// a late Update never recreates a torn-down pod (a volume whose SetUp
// failed is SetUp's to retry). A failing source leaves the volume's
// previous contents in place.
func (m *Manager) Update(ctx context.Context, pod *corev1.Pod) error {
	if err := checkPodUID(pod.UID); err != nil {
		return err
	}
	defer m.locks.lock(pod.UID)()
	var errs []error
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		vs := &vol.VolumeSource
		if vs.ConfigMap == nil && vs.Secret == nil && vs.DownwardAPI == nil && vs.Projected == nil {
			continue
		}
		if checkName(vol.Name) != nil {
			continue
		}
		if _, err := m.setUpData(ctx, pod, vol, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TearDown unmounts everything the Manager mounted for the pod (tmpfs,
// local volume binds, subPath binds), unpublishes its CSI volumes (and
// unstages those no pod uses any more), and removes the pod's volume
// directories. It never removes data behind a mount: every mount under
// the pod's directory is unmounted first, and the removal refuses to
// cross into another file system, so hostPath, local and other
// PersistentVolume data is never touched. A CSI volume that cannot be
// unpublished or unstaged (its driver is not registered, or fails) makes
// TearDown fail before the pod's directories and records are removed; the
// next call resumes (a missing driver fails it before anything is
// unmounted). Idempotent.
func (m *Manager) TearDown(ctx context.Context, podUID types.UID) error {
	if err := checkPodUID(podUID); err != nil {
		return err
	}
	defer m.locks.lock(podUID)()
	m.tokens.forget(podUID)
	podDir := m.podDir(podUID)
	if _, err := os.Lstat(podDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// CSI volumes are unpublished by their drivers before the generic
	// unmount, and unstaged after it (which also unmounts subPath binds
	// into them). On an error the pod's records stay for the next call.
	csiTargets, err := m.unpublishCSI(ctx, podUID)
	if err != nil {
		return err
	}
	if err := UnmountUnder(podDir); err != nil {
		return err
	}
	m.devices.Lock()
	err = m.releaseDeviceMounts()
	m.devices.Unlock()
	if err != nil {
		return err
	}
	if err := m.unstageCSI(ctx, csiTargets); err != nil {
		return err
	}
	for _, sub := range []string{"volume-subpaths", "volumes", "volumeDevices", "plugins"} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := removeAllOneFS(filepath.Join(podDir, sub)); err != nil {
			return err
		}
	}
	// The agent may keep other things in the pod's directory; remove it
	// only when nothing is left.
	if err := os.Remove(podDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrExist) && !isNotEmpty(err) {
		return err
	}
	return nil
}

func (m *Manager) podDir(uid types.UID) string {
	return filepath.Join(m.root, "pods", string(uid))
}

func (m *Manager) volumeDir(uid types.UID, plugin, name string) string {
	return filepath.Join(m.podDir(uid), "volumes", plugin, name)
}

// readyFile marks a volume whose one-time setup (ownership) is done, at
// kubelet's <pod>/plugins/<plugin>/<volume>/ready.
func (m *Manager) readyFile(uid types.UID, plugin, name string) string {
	return filepath.Join(m.podDir(uid), "plugins", plugin, name, "ready")
}

// checkPodUID refuses a UID that is not one path component.
func checkPodUID(uid types.UID) error {
	if err := checkName(string(uid)); err != nil {
		return fmt.Errorf("pod UID %q: %w", uid, err)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q cannot be used as a directory name", name)
	}
	return nil
}

// makeVolumeDir creates dir (parents 0750, as kubelet's pod directories)
// with mode 0777, whatever the umask: the mode of an emptyDir and of the
// directory an atomic-writer volume wraps.
func makeVolumeDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o777 {
		return os.Chmod(dir, fi.Mode()&(os.ModeSetgid|os.ModeSticky)|0o777)
	}
	return nil
}

// podLocks serializes the calls for one pod.
type podLocks = keyedLocks[types.UID]

// keyedLocks is a mutex per key, kept only while someone holds or waits
// for it.
type keyedLocks[K comparable] struct {
	mu sync.Mutex
	m  map[K]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	users int
}

func (l *keyedLocks[K]) lock(key K) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[K]*keyedLock{}
	}
	kl := l.m[key]
	if kl == nil {
		kl = &keyedLock{}
		l.m[key] = kl
	}
	kl.users++
	l.mu.Unlock()
	kl.Lock()
	return func() {
		kl.Unlock()
		l.mu.Lock()
		if kl.users--; kl.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}
