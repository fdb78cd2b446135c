package volume

import (
	"context"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The pod information a driver whose CSIDriver sets podInfoOnMount
// receives in NodePublishVolume's volume context, under the kubelet's keys
// (csi_mounter.go getPodInfoAttrs).
const (
	podInfoName           = "csi.storage.k8s.io/pod.name"
	podInfoNamespace      = "csi.storage.k8s.io/pod.namespace"
	podInfoUID            = "csi.storage.k8s.io/pod.uid"
	podInfoServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	podInfoEphemeral      = "csi.storage.k8s.io/ephemeral"
)

// csiPodInfo is the pod information to pass to driver, or nil if its
// CSIDriver does not ask for it (or there is none).
func (m *Manager) csiPodInfo(ctx context.Context, driver string, pod *corev1.Pod) (map[string]string, error) {
	if m.opts.CSIDriver == nil {
		return nil, nil
	}
	d, err := m.opts.CSIDriver(ctx, driver)
	if apierrors.IsNotFound(err) || (err == nil && d == nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
		return nil, nil
	}
	return map[string]string{
		podInfoName:           pod.Name,
		podInfoNamespace:      pod.Namespace,
		podInfoUID:            string(pod.UID),
		podInfoServiceAccount: pod.Spec.ServiceAccountName,
		podInfoEphemeral:      "false", // inline (ephemeral) CSI volumes are not served
	}, nil
}

// publishContext is the volume context of NodePublishVolume: the volume's
// attributes, and the pod's information where the driver asked for it.
func (v *csiVolume) publishContext() map[string]string {
	if len(v.podInfo) == 0 {
		return v.src.VolumeAttributes
	}
	out := maps.Clone(v.src.VolumeAttributes)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, v.podInfo)
	return out
}
