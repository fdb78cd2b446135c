package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// StagingPath is the kubelet's staging ("global mount") directory of a CSI
// volume under an agent root dir (the kubelet's /var/lib/kubelet):
//
//	<root>/plugins/kubernetes.io/csi/<driver>/<hex sha256(volumeHandle)>/globalmount
//
// as kubernetes/kubernetes pkg/volume/csi/csi_attacher.go makeDeviceMountPath
// builds it. Hashing the handle keeps any handle a valid path element.
func StagingPath(root, driver, volumeHandle string) string {
	sum := sha256.Sum256([]byte(volumeHandle))
	return filepath.Join(root, "plugins", "kubernetes.io", "csi", driver, hex.EncodeToString(sum[:]), "globalmount")
}

// PublishPath is the kubelet's per-pod publish target of a CSI volume:
//
//	<root>/pods/<podUID>/volumes/kubernetes.io~csi/<volumeName>/mount
//
// where volumeName is the PV name (or the pod's volume name for inline
// volumes) with "/" escaped to "~", as kubernetes/kubernetes
// pkg/volume/csi/csi_mounter.go (GetPath, getTargetPath) builds it.
func PublishPath(root, podUID, volumeName string) string {
	return filepath.Join(root, "pods", podUID, "volumes", "kubernetes.io~csi",
		strings.ReplaceAll(volumeName, "/", "~"), "mount")
}
