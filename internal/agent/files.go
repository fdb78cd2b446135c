package agent

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// Where the agent keeps a pod's own files, beside the volume manager's
// <data>/pods/<uid>/volumes: the hosts, hostname and resolv.conf files
// bound into every container, termination-message files, and (under
// <data>/logs, as /var/log/pods) the container logs, one file per attempt.
func (a *Agent) podDir(pod *corev1.Pod) string {
	return filepath.Join(a.opts.DataDir, "pods", string(pod.UID))
}

func (a *Agent) podFilesDir(pod *corev1.Pod) string { return filepath.Join(a.podDir(pod), "etc") }

func (a *Agent) terminationFile(pod *corev1.Pod, name string, attempt int) string {
	return filepath.Join(a.podDir(pod), "containers", name, fmt.Sprintf("%d-termination-log", attempt))
}

func (a *Agent) podLogDir(pod *corev1.Pod) string {
	return filepath.Join(a.opts.DataDir, "logs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

func (a *Agent) logPath(pod *corev1.Pod, name string, attempt int) string {
	return filepath.Join(a.podLogDir(pod), name, fmt.Sprintf("%d.log", attempt))
}

// writePodFiles writes the pod's /etc/hosts (the kubelet's managed file),
// /etc/hostname and /etc/resolv.conf (network.go) for a pod at address ip.
func (a *Agent) writePodFiles(pod *corev1.Pod, ip string) error {
	dir := a.podFilesDir(pod)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hosts, err := hostsFile(pod, ip)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), hosts, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(podHostname(pod)+"\n"), 0o644); err != nil {
		return err
	}
	host, _ := os.ReadFile("/etc/resolv.conf")
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), resolvConf(pod, host), 0o644)
}

// removePodFiles deletes the pod's files and logs once it is gone.
func (a *Agent) removePodFiles(pod *corev1.Pod) {
	_ = os.RemoveAll(a.podLogDir(pod))
	_ = os.RemoveAll(filepath.Join(a.podDir(pod), "etc"))
	_ = os.RemoveAll(filepath.Join(a.podDir(pod), "containers"))
	_ = os.Remove(a.podDir(pod)) // volumes/ is the volume manager's; it removed it
}
