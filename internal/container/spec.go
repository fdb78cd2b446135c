package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ContainerSpec is what CreateContainer runs.
type ContainerSpec struct {
	ID        string
	SandboxID string
	Rootfs    Rootfs
	Args      []string
	Env       []string // "K=V"; a PATH is added when missing
	Cwd       string   // "" means "/"
	User      User
	// Privileged: every capability in the runtime's bounding set, all
	// devices allowed, no masked or read-only kernel paths, /sys writable.
	Privileged     bool
	ReadOnlyRootfs bool
	Mounts         []Mount
	Devices        []Device
	Resources      Resources
	// LogPath receives the container's stdout and stderr in the CRI log
	// format; its directory must exist.
	LogPath string
	// Stdin keeps the container's stdin open for attach sessions (else it
	// is /dev/null); StdinOnce closes it when the first attached session's
	// input ends. TTY runs the container on a terminal, whose output is
	// logged as stdout. See Runtime.Attach.
	Stdin, StdinOnce, TTY bool
}

// Rootfs is a container's image: read-only layers under its own writable one.
type Rootfs struct {
	// LowerDirs are the read-only layers, top first. A single "/" is the
	// host's root filesystem (without the mounts on it), used as an image;
	// the runtime's state and Config.MaskPaths are then hidden.
	LowerDirs []string
}

// User is the identity a container's processes run as.
type User struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
}

// Mount is a file system made visible in the container.
type Mount struct {
	Source      string // host path (a bind); for other types, the source given to mount
	Destination string // absolute path in the container
	ReadOnly    bool
	Propagation string // "" (private), "rslave" or "rshared"
	Type        string // "" for a bind mount, else e.g. "tmpfs"
}

// Device is a host block or character device made available in the container.
type Device struct {
	HostPath      string
	ContainerPath string
}

// Resources limit a container through its cgroups; zero means no limit.
type Resources struct {
	MemoryLimit int64 // bytes
	CPUShares   uint64
	CPUQuota    int64 // microseconds per CPUPeriod
	CPUPeriod   uint64
	PidsLimit   int64
}

// defaultCapabilities are what an unprivileged container gets: the set
// Docker and containerd give by default.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Kernel interfaces hidden from unprivileged containers, or made read-only.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// validate checks what runc would reject late or obscurely.
func (c *ContainerSpec) validate() error {
	if err := checkID("container", c.ID); err != nil {
		return err
	}
	if err := checkID("sandbox", c.SandboxID); err != nil {
		return err
	}
	if len(c.Args) == 0 {
		return fmt.Errorf("container %s: no Args", c.ID)
	}
	if len(c.Rootfs.LowerDirs) == 0 {
		return fmt.Errorf("container %s: no Rootfs.LowerDirs", c.ID)
	}
	for _, d := range c.Rootfs.LowerDirs {
		if !filepath.IsAbs(d) || strings.ContainsAny(d, ":,") {
			return fmt.Errorf("container %s: lower dir %q must be absolute, without ':' or ','", c.ID, d)
		}
	}
	if c.LogPath == "" || !filepath.IsAbs(c.LogPath) {
		return fmt.Errorf("container %s: LogPath %q must be absolute", c.ID, c.LogPath)
	}
	for _, m := range c.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("container %s: mount destination %q must be absolute", c.ID, m.Destination)
		}
		switch m.Propagation {
		case "", "rprivate", "rslave", "rshared":
		default:
			return fmt.Errorf("container %s: mount %s: unknown propagation %q", c.ID, m.Destination, m.Propagation)
		}
	}
	return nil
}

// ociSpec builds the OCI runtime spec for c: rootfs is the bundle's root
// mount, pause the sandbox process whose namespaces c joins.
func (r *Runtime) ociSpec(c *ContainerSpec, sb *sandboxRecord, rootfs string) (*specs.Spec, error) {
	caps := defaultCapabilities
	if c.Privileged {
		caps = r.allCaps
	}
	env := c.Env
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append([]string{defaultPath}, env...)
	}
	cwd := c.Cwd
	if cwd == "" {
		cwd = "/"
	}
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs, Readonly: c.ReadOnlyRootfs},
		Process: &specs.Process{
			Terminal: c.TTY,
			Args:     c.Args,
			Env:      env,
			Cwd:      cwd,
			User:     specs.User{UID: c.User.UID, GID: c.User.GID, AdditionalGids: c.User.AdditionalGIDs},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
		},
		Mounts: r.mounts(c, sb),
		Linux: &specs.Linux{
			CgroupsPath: r.cgroupsPath(c.SandboxID, c.ID),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace, Path: sb.nsPath("ipc")},
				{Type: specs.UTSNamespace, Path: sb.nsPath("uts")},
			},
			Resources:         resources(c.Resources),
			RootfsPropagation: "rslave",
		},
	}
	if sb.NetNS != "" {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: sb.nsPath("net")})
	}
	for _, m := range c.Mounts {
		if m.Propagation == "rshared" {
			s.Linux.RootfsPropagation = "rshared"
		}
	}
	if c.Privileged {
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		s.Linux.MaskedPaths = maskedPaths
		s.Linux.ReadonlyPaths = readonlyPaths
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	}
	for _, d := range c.Devices {
		dev, rule, err := device(d)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID, err)
		}
		s.Linux.Devices = append(s.Linux.Devices, dev)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, rule)
	}
	return s, nil
}

// mounts are the container's file systems: the kernel's, the pod's
// /dev/shm, the masks over the runtime's state, then the caller's.
func (r *Runtime) mounts(c *ContainerSpec, sb *sandboxRecord) []specs.Mount {
	sysOpt := "ro"
	if c.Privileged {
		sysOpt = "rw"
	}
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysOpt}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysOpt}},
		{Destination: "/dev/shm", Type: "bind", Source: filepath.Join(r.sandboxDir(sb.ID), "shm"), Options: []string{"rbind", "nosuid", "nodev", "noexec"}},
	}
	if slices.Contains(c.Rootfs.LowerDirs, "/") {
		for _, p := range outermost(append([]string{r.cfg.StateDir}, r.cfg.MaskPaths...)) {
			ms = append(ms, specs.Mount{Destination: p, Type: "tmpfs", Source: "tmpfs", Options: []string{"ro", "nosuid", "nodev", "noexec", "size=4k", "mode=755"}})
		}
	}
	for _, m := range c.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		om := specs.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: []string{mode}}
		switch {
		case m.Type == "":
			om.Type = "bind"
			om.Options = append(om.Options, "rbind")
		case m.Source == "":
			om.Source = m.Type
		}
		if m.Propagation != "" {
			om.Options = append(om.Options, m.Propagation)
		}
		ms = append(ms, om)
	}
	return ms
}

// outermost drops the paths that lie inside another of paths: a mask over a
// directory hides what is below it, and a mount below a later mask would
// be covered before runc finishes with it.
func outermost(paths []string) []string {
	var out []string
	for _, p := range paths {
		inside := false
		for _, q := range paths {
			inside = inside || (q != p && strings.HasPrefix(p, strings.TrimSuffix(q, "/")+"/"))
		}
		if !inside && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// resources maps the limits onto the OCI spec's cgroup settings.
func resources(res Resources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if res.MemoryLimit > 0 {
		out.Memory = &specs.LinuxMemory{Limit: &res.MemoryLimit}
	}
	if res.CPUShares > 0 || res.CPUQuota != 0 || res.CPUPeriod > 0 {
		out.CPU = &specs.LinuxCPU{}
		if res.CPUShares > 0 {
			out.CPU.Shares = &res.CPUShares
		}
		if res.CPUQuota != 0 {
			out.CPU.Quota = &res.CPUQuota
		}
		if res.CPUPeriod > 0 {
			out.CPU.Period = &res.CPUPeriod
		}
	}
	if res.PidsLimit > 0 {
		out.Pids = &specs.LinuxPids{Limit: res.PidsLimit}
	}
	return out
}

// device describes the host device d for the spec: the node runc creates in
// the container, and the cgroup rule that lets the container use it.
func device(d Device) (specs.LinuxDevice, specs.LinuxDeviceCgroup, error) {
	var st unix.Stat_t
	if err := unix.Stat(d.HostPath, &st); err != nil {
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s: %w", d.HostPath, err)
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		typ = "b"
	case unix.S_IFCHR:
		typ = "c"
	default:
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s: not a block or character device", d.HostPath)
	}
	path := d.ContainerPath
	if path == "" {
		path = d.HostPath
	}
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	mode := os.FileMode(st.Mode & 0o777)
	var uid, gid uint32
	dev := specs.LinuxDevice{Path: path, Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid}
	rule := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: "rwm"}
	return dev, rule, nil
}
