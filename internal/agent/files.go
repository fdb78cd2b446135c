package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
// /etc/hostname and /etc/resolv.conf (the node's, until the cluster DNS).
func (a *Agent) writePodFiles(pod *corev1.Pod) error {
	dir := a.podFilesDir(pod)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hostname := podHostname(pod)
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	if pod.Spec.Subdomain != "" {
		fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.cluster.local\t%s\n", a.ip, hostname, pod.Spec.Subdomain, pod.Namespace, hostname)
	} else {
		fmt.Fprintf(&b, "%s\t%s\n", a.ip, hostname)
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, alias := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", alias.IP, strings.Join(alias.Hostnames, "\t"))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644)
}

// removePodFiles deletes the pod's files and logs once it is gone.
func (a *Agent) removePodFiles(pod *corev1.Pod) {
	_ = os.RemoveAll(a.podLogDir(pod))
	_ = os.RemoveAll(filepath.Join(a.podDir(pod), "etc"))
	_ = os.RemoveAll(filepath.Join(a.podDir(pod), "containers"))
	_ = os.Remove(a.podDir(pod)) // volumes/ is the volume manager's; it removed it
}
