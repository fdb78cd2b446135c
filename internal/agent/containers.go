package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/image"
	"github.com/moorage/moorage/internal/volume"
)

// backOffStart delays the next attempt to start the container after a
// failed pull or creation (upstream's image pull back-off).
func (cs *containerState) backOffStart() {
	cs.startBackoff = nextBackoff(cs.startBackoff)
	cs.startBackoffUntil = time.Now().Add(cs.startBackoff)
}

// startContainer creates and starts the next attempt of a container, or
// records why it cannot (the waiting reasons upstream shows).
func (a *Agent) startContainer(ctx context.Context, w *podWorker, pod *corev1.Pod, c *corev1.Container, cs *containerState, mounts map[string]volume.Mounted) {
	if time.Now().Before(cs.startBackoffUntil) {
		if cs.waitingReason == "ErrImagePull" {
			cs.waitingReason, cs.waitingMessage = "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", c.Image)
		}
		return
	}
	img, ok := a.ensureImage(ctx, w, pod, c, cs)
	if !ok {
		return
	}
	next := cs.attempt
	if cs.id != "" {
		next++
	}
	id := containerID(pod.UID, c.Name, next)
	spec, err := a.containerSpec(ctx, pod, c, id, next, img, mounts)
	if err != nil {
		cs.waitingReason, cs.waitingMessage = "CreateContainerConfigError", err.Error()
		a.eventOnce(w, pod, "config:"+c.Name+err.Error(), corev1.EventTypeWarning, "Failed", "Error: %v", err)
		cs.backOffStart()
		return
	}
	// Only the previous attempt is kept (for `kubectl logs --previous`).
	if next >= 2 {
		_ = a.runtime.Remove(ctx, containerID(pod.UID, c.Name, next-2))
	}
	_ = a.runtime.Remove(ctx, id) // a half-made one from a crash
	if err := a.runtime.CreateContainer(ctx, spec); err != nil {
		cs.waitingReason, cs.waitingMessage = "CreateContainerError", err.Error()
		a.eventOnce(w, pod, "create:"+c.Name+err.Error(), corev1.EventTypeWarning, "Failed", "Error: %v", err)
		cs.backOffStart()
		return
	}
	cs.startBackoff, cs.startBackoffUntil = 0, time.Time{}
	if cs.lastTerminated != nil {
		cs.previous, cs.lastTerminated = cs.lastTerminated, nil
	}
	cs.id, cs.attempt, cs.imageID = id, next, img.ID
	a.recorder.Eventf(pod, corev1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	if err := a.runtime.Start(ctx, id); err != nil {
		cs.waitingReason, cs.waitingMessage = "RunContainerError", err.Error()
		a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return
	}
	cs.waitingReason, cs.waitingMessage = "", ""
	w.watchUntil = time.Now().Add(2 * time.Second)
	cs.ready.Store(false)
	cs.started.Store(false)
	cs.liveFails.Store(false)
	a.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
	if !cs.init {
		a.startProbes(w, pod, c, cs)
	}
}

// ensureImage finds the container's image in the node's store, pulling it
// if the policy allows; on failure the container waits in ErrImagePull,
// then ImagePullBackOff.
func (a *Agent) ensureImage(ctx context.Context, w *podWorker, pod *corev1.Pod, c *corev1.Container, cs *containerState) (image.Image, bool) {
	img, err := a.images.Get(c.Image)
	if err == nil && c.ImagePullPolicy != corev1.PullAlways {
		a.eventOnce(w, pod, "pulled:"+c.Name+":"+img.ID, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
		return img, true
	}
	if err != nil && !errors.Is(err, image.ErrNotFound) {
		cs.waitingReason, cs.waitingMessage = "InvalidImageName", fmt.Sprintf("Failed to apply default image tag %q: %v", c.Image, err)
		return image.Image{}, false
	}
	if c.ImagePullPolicy == corev1.PullNever {
		cs.waitingReason = "ErrImageNeverPull"
		cs.waitingMessage = fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		a.eventOnce(w, pod, "neverpull:"+c.Name, corev1.EventTypeWarning, "ErrImageNeverPull", "%s", cs.waitingMessage)
		return image.Image{}, false
	}
	a.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	pullCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	pulled, perr := a.images.Pull(pullCtx, c.Image)
	cancel()
	if perr != nil && err == nil {
		// Always, but the registry failed us: unlike upstream, run the copy
		// the node has (an imported image, or a host program named so), so
		// that manifests written for a registry run on machines without one.
		a.eventOnce(w, pod, "pulled:"+c.Name+":"+img.ID, corev1.EventTypeNormal, "Pulled",
			"Container image %q already present on machine; pulling it failed (%v), so that copy is used", c.Image, perr)
		return img, true
	}
	if perr != nil {
		msg := fmt.Sprintf("Failed to pull image %q: %v", c.Image, perr)
		a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "%s", msg)
		a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
		cs.waitingReason, cs.waitingMessage = "ErrImagePull", msg
		cs.backOffStart()
		return image.Image{}, false
	}
	a.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q", c.Image)
	return pulled, true
}

// containerSpec turns a container of the pod into what the runtime runs.
func (a *Agent) containerSpec(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, attempt int, img image.Image, mounts map[string]volume.Mounted) (container.ContainerSpec, error) {
	env, err := a.containerEnv(ctx, pod, c, a.podIP(pod))
	if err != nil {
		return container.ContainerSpec{}, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	if _, ok := vars["HOSTNAME"]; !ok { // as container runtimes set it
		env = append([]string{"HOSTNAME=" + podHostname(pod)}, env...)
	}
	for _, kv := range img.Config.Env { // the image's, under the pod's
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok {
			env = append([]string{kv}, env...)
		}
	}
	args := commandLine(c, img.Config, vars)
	if len(args) == 0 {
		return container.ContainerSpec{}, errors.New("no command specified")
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.Config.WorkingDir
	}
	spec := container.ContainerSpec{
		ID: id, SandboxID: string(pod.UID), Rootfs: container.Rootfs{LowerDirs: img.Layers},
		Args: args, Env: env, Cwd: cwd, User: containerUser(pod, c, img.Config),
		LogPath: a.logPath(pod, c.Name, attempt),
		Stdin:   c.Stdin, StdinOnce: c.StdinOnce, TTY: c.TTY,
	}
	if sc := c.SecurityContext; sc != nil {
		spec.Privileged = sc.Privileged != nil && *sc.Privileged
		spec.ReadOnlyRootfs = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
	spec.Resources = containerResources(c)
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o750); err != nil {
		return spec, err
	}
	for i, vm := range c.VolumeMounts {
		m, ok := mounts[vm.Name]
		if !ok {
			return spec, fmt.Errorf("cannot find volume %q to mount into container %q", vm.Name, c.Name)
		}
		src := m.HostPath
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			sub := vm.SubPath
			if vm.SubPathExpr != "" {
				sub = expand(vm.SubPathExpr, vars)
			}
			if src, err = a.volumes.PrepareSubPath(pod.UID, vm.Name, c.Name, i, m.HostPath, sub); err != nil {
				return spec, err
			}
		}
		if hp := hostPathOf(pod, vm.Name); hp != nil && (hp.Type == nil || *hp.Type == corev1.HostPathUnset) && src == hp.Path {
			// No type, no checks: a missing path becomes a directory, as
			// container runtimes make it.
			if _, err := os.Lstat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return spec, err
				}
			}
		}
		mount := container.Mount{Source: src, Destination: vm.MountPath, ReadOnly: vm.ReadOnly || m.ReadOnly}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationHostToContainer:
				mount.Propagation = "rslave"
			case corev1.MountPropagationBidirectional:
				mount.Propagation = "rshared"
			}
		}
		spec.Mounts = append(spec.Mounts, mount)
	}
	for _, vd := range c.VolumeDevices {
		m, ok := mounts[vd.Name]
		if !ok || !m.Block {
			return spec, fmt.Errorf("volume %q is not a block volume to map into container %q", vd.Name, c.Name)
		}
		spec.Devices = append(spec.Devices, container.Device{HostPath: m.HostPath, ContainerPath: vd.DevicePath})
	}
	files := a.podFilesDir(pod)
	spec.Mounts = append(spec.Mounts,
		container.Mount{Source: filepath.Join(files, "hosts"), Destination: "/etc/hosts"},
		container.Mount{Source: filepath.Join(files, "hostname"), Destination: "/etc/hostname"},
		container.Mount{Source: filepath.Join(files, "resolv.conf"), Destination: "/etc/resolv.conf", ReadOnly: true},
	)
	if path := c.TerminationMessagePath; path != "" {
		msgFile := a.terminationFile(pod, c.Name, attempt)
		if err := os.MkdirAll(filepath.Dir(msgFile), 0o750); err != nil {
			return spec, err
		}
		if err := os.WriteFile(msgFile, nil, 0o666); err != nil {
			return spec, err
		}
		spec.Mounts = append(spec.Mounts, container.Mount{Source: msgFile, Destination: path})
	}
	return spec, nil
}

func hostPathOf(pod *corev1.Pod, volume string) *corev1.HostPathVolumeSource {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume {
			return v.HostPath
		}
	}
	return nil
}

// commandLine is upstream's rule: command replaces the image's entrypoint
// (and drops its cmd), args replace its cmd; $(VAR) expands in both.
func commandLine(c *corev1.Container, cfg image.Config, vars map[string]string) []string {
	var out []string
	switch {
	case len(c.Command) > 0:
		out = append(append(out, c.Command...), c.Args...)
	case len(c.Args) > 0:
		out = append(append(out, cfg.Entrypoint...), c.Args...)
	default:
		out = append(append(out, cfg.Entrypoint...), cfg.Cmd...)
	}
	for i := range out {
		out[i] = expand(out[i], vars)
	}
	return out
}

// containerUser is runAsUser/runAsGroup (the container's over the pod's),
// else the image's numeric user; supplemental groups and fsGroup join.
func containerUser(pod *corev1.Pod, c *corev1.Container, cfg image.Config) container.User {
	var u container.User
	if user, group, ok := strings.Cut(cfg.User, ":"); cfg.User != "" {
		if n, err := strconv.ParseUint(user, 10, 32); err == nil {
			u.UID = uint32(n)
		}
		if ok {
			if n, err := strconv.ParseUint(group, 10, 32); err == nil {
				u.GID = uint32(n)
			}
		}
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			u.UID = uint32(*psc.RunAsUser)
		}
		if psc.RunAsGroup != nil {
			u.GID = uint32(*psc.RunAsGroup)
		}
		for _, g := range psc.SupplementalGroups {
			u.AdditionalGIDs = append(u.AdditionalGIDs, uint32(g))
		}
		if psc.FSGroup != nil {
			u.AdditionalGIDs = append(u.AdditionalGIDs, uint32(*psc.FSGroup))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			u.UID = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			u.GID = uint32(*sc.RunAsGroup)
		}
	}
	return u
}

// containerResources maps limits and requests to cgroup settings as the
// kubelet does (CFS quota per 100 ms period, shares from the cpu request).
func containerResources(c *corev1.Container) container.Resources {
	var r container.Resources
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimit = mem.Value()
	}
	if cpu, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.CPUPeriod = 100000
		r.CPUQuota = max(cpu.MilliValue()*100, 1000)
	}
	req, ok := c.Resources.Requests[corev1.ResourceCPU]
	if !ok {
		req, ok = c.Resources.Limits[corev1.ResourceCPU]
	}
	r.CPUShares = 2
	if ok {
		r.CPUShares = uint64(max(req.MilliValue()*1024/1000, 2))
	}
	return r
}

// terminationMessage is what the container wrote to its termination
// message path, or with FallbackToLogsOnError the end of its log when it
// failed and wrote nothing.
func (a *Agent) terminationMessage(pod *corev1.Pod, c *corev1.Container, cs *containerState) string {
	b, _ := os.ReadFile(a.terminationFile(pod, c.Name, cs.attempt))
	if len(b) > 4096 {
		b = b[:4096]
	}
	msg := string(b)
	if msg == "" && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		var sb strings.Builder
		tail := int64(80)
		limit := int64(2048)
		_ = container.ReadLog(context.Background(), a.logPath(pod, c.Name, cs.attempt), container.LogOptions{TailLines: &tail, LimitBytes: &limit}, &sb)
		msg = sb.String()
	}
	return msg
}
