package volume

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
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

// csiPublishInfo reads the driver's CSIDriver object for a persistent
// volume's publication: the pod information to pass if it asks for
// podInfoOnMount (nil otherwise, or without an object), and the kubelet's
// refusal if its volumeLifecycleModes leave out Persistent.
func (m *Manager) csiPublishInfo(ctx context.Context, driver string, pod *corev1.Pod) (podInfo map[string]string, modeErr, err error) {
	if m.opts.CSIDriver == nil {
		return nil, nil, nil
	}
	d, err := m.opts.CSIDriver(ctx, driver)
	if apierrors.IsNotFound(err) || (err == nil && d == nil) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if modes := d.Spec.VolumeLifecycleModes; len(modes) > 0 && !slices.Contains(modes, storagev1.VolumeLifecyclePersistent) {
		return nil, fmt.Errorf("volume mode %q not supported by driver %s (only supports %q)", storagev1.VolumeLifecyclePersistent, driver, modes), nil
	}
	if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
		return nil, nil, nil
	}
	return map[string]string{
		podInfoName:           pod.Name,
		podInfoNamespace:      pod.Namespace,
		podInfoUID:            string(pod.UID),
		podInfoServiceAccount: pod.Spec.ServiceAccountName,
		podInfoEphemeral:      "false", // inline (ephemeral) CSI volumes are not served
	}, nil, nil
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
