package volume

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

// dataPlugin is the plugin directory of an atomic-writer volume and
// whether it lives on tmpfs: upstream wraps secret and projected volumes
// in a memory-backed emptyDir (so secrets never reach the disk), and
// configMap and downwardAPI volumes in a disk one.
func dataPlugin(vs *corev1.VolumeSource) (plugin string, memory bool) {
	switch {
	case vs.Secret != nil:
		return pluginSecret, true
	case vs.Projected != nil:
		return pluginProjected, true
	case vs.ConfigMap != nil:
		return pluginConfigMap, false
	default:
		return pluginDownwardAPI, false
	}
}

// setUpData sets up (or, with updateOnly, refreshes) a configMap, secret,
// downwardAPI or projected volume: the payload is computed first, so a
// failing source changes nothing on disk, then written atomically.
func (m *Manager) setUpData(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume, updateOnly bool) (Mounted, error) {
	plugin, memory := dataPlugin(&vol.VolumeSource)
	dir := m.volumeDir(pod.UID, plugin, vol.Name)
	if updateOnly {
		if _, err := os.Lstat(dir); err != nil {
			return Mounted{}, nil // not set up: nothing to update
		}
		if memory {
			if tmpfs, err := isTmpfs(dir); err != nil || !tmpfs {
				return Mounted{}, nil // never write a secret to the disk
			}
		}
	}
	payload, err := m.payload(ctx, pod, vol)
	if err != nil {
		return Mounted{}, setUpError(vol.Name, err)
	}
	if !updateOnly {
		if err := makeVolumeDir(dir); err != nil {
			return Mounted{}, setUpError(vol.Name, err)
		}
		if memory {
			if err := mountTmpfs(dir, m.memorySize(pod, nil)); err != nil {
				return Mounted{}, setUpError(vol.Name, err)
			}
		}
	}
	if _, err := writeAtomic(dir, payload, podFSGroup(pod)); err != nil {
		return Mounted{}, setUpError(vol.Name, err)
	}
	return Mounted{HostPath: dir, ReadOnly: true}, nil
}

func (m *Manager) payload(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume) (map[string]fileProjection, error) {
	vs := &vol.VolumeSource
	switch {
	case vs.ConfigMap != nil:
		src := vs.ConfigMap
		optional := src.Optional != nil && *src.Optional
		cm, err := m.configMap(ctx, pod.Namespace, src.Name, optional)
		if err != nil {
			return nil, err
		}
		return configMapPayload(src.Items, cm, src.DefaultMode, optional)
	case vs.Secret != nil:
		src := vs.Secret
		optional := src.Optional != nil && *src.Optional
		sec, err := m.secret(ctx, pod.Namespace, src.SecretName, optional)
		if err != nil {
			return nil, err
		}
		return secretPayload(src.Items, sec, src.DefaultMode, optional)
	case vs.DownwardAPI != nil:
		return downwardAPIPayload(vs.DownwardAPI.Items, pod, vs.DownwardAPI.DefaultMode, m.opts.NodeAllocatable)
	default:
		return m.projectedPayload(ctx, pod, vs.Projected)
	}
}

// configMap reads a ConfigMap; a missing one is an empty one when
// optional, else upstream's `configmap "name" not found`.
func (m *Manager) configMap(ctx context.Context, namespace, name string, optional bool) (*corev1.ConfigMap, error) {
	cm, err := m.get.ConfigMap(ctx, namespace, name)
	if err == nil && cm == nil {
		err = apierrors.NewNotFound(schema.GroupResource{Resource: "configmap"}, name)
	}
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		if optional {
			return &corev1.ConfigMap{}, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmap"}, name)
	}
	return cm, nil
}

// secret reads a Secret; a missing one is an empty one when optional, else
// upstream's `secret "name" not found`.
func (m *Manager) secret(ctx context.Context, namespace, name string, optional bool) (*corev1.Secret, error) {
	sec, err := m.get.Secret(ctx, namespace, name)
	if err == nil && sec == nil {
		err = apierrors.NewNotFound(schema.GroupResource{Resource: "secret"}, name)
	}
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		if optional {
			return &corev1.Secret{}, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secret"}, name)
	}
	return sec, nil
}

func modeOr(mode *int32, def int32) int32 {
	if mode != nil {
		return *mode
	}
	return def
}

// configMapPayload is every key (data and binaryData) as a file named
// after it, or only the items, each at its path with its own mode or the
// default one. A missing item key is an error unless the source is
// optional, with upstream's message.
func configMapPayload(items []corev1.KeyToPath, cm *corev1.ConfigMap, defaultMode *int32, optional bool) (map[string]fileProjection, error) {
	mode := modeOr(defaultMode, corev1.ConfigMapVolumeSourceDefaultMode)
	out := make(map[string]fileProjection, len(cm.Data)+len(cm.BinaryData))
	if len(items) == 0 {
		for k, v := range cm.Data {
			out[k] = fileProjection{Data: []byte(v), Mode: mode}
		}
		for k, v := range cm.BinaryData {
			out[k] = fileProjection{Data: v, Mode: mode}
		}
		return out, nil
	}
	for _, it := range items {
		var data []byte
		if v, ok := cm.Data[it.Key]; ok {
			data = []byte(v)
		} else if v, ok := cm.BinaryData[it.Key]; ok {
			data = v
		} else {
			if optional {
				continue
			}
			return nil, fmt.Errorf("configmap references non-existent config key: %s", it.Key)
		}
		out[it.Path] = fileProjection{Data: data, Mode: modeOr(it.Mode, mode)}
	}
	return out, nil
}

// secretPayload is configMapPayload for a Secret's data.
func secretPayload(items []corev1.KeyToPath, sec *corev1.Secret, defaultMode *int32, optional bool) (map[string]fileProjection, error) {
	mode := modeOr(defaultMode, corev1.SecretVolumeSourceDefaultMode)
	out := make(map[string]fileProjection, len(sec.Data))
	if len(items) == 0 {
		for k, v := range sec.Data {
			out[k] = fileProjection{Data: v, Mode: mode}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := sec.Data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("secret references non-existent secret key: %s", it.Key)
		}
		out[it.Path] = fileProjection{Data: v, Mode: modeOr(it.Mode, mode)}
	}
	return out, nil
}

// projectedPayload merges its sources, in order, into one payload; the
// errors of all sources are reported together, as upstream.
func (m *Manager) projectedPayload(ctx context.Context, pod *corev1.Pod, src *corev1.ProjectedVolumeSource) (map[string]fileProjection, error) {
	mode := modeOr(src.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
	out := map[string]fileProjection{}
	var errs []error
	merge := func(p map[string]fileProjection, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		for k, v := range p {
			out[k] = v
		}
	}
	for _, s := range src.Sources {
		switch {
		case s.Secret != nil:
			optional := s.Secret.Optional != nil && *s.Secret.Optional
			sec, err := m.secret(ctx, pod.Namespace, s.Secret.Name, optional)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			merge(secretPayload(s.Secret.Items, sec, &mode, optional))
		case s.ConfigMap != nil:
			optional := s.ConfigMap.Optional != nil && *s.ConfigMap.Optional
			cm, err := m.configMap(ctx, pod.Namespace, s.ConfigMap.Name, optional)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			merge(configMapPayload(s.ConfigMap.Items, cm, &mode, optional))
		case s.DownwardAPI != nil:
			merge(downwardAPIPayload(s.DownwardAPI.Items, pod, &mode, m.opts.NodeAllocatable))
		case s.ServiceAccountToken != nil:
			fp, err := m.tokenFile(ctx, pod, s.ServiceAccountToken, mode)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[s.ServiceAccountToken.Path] = fp
		case s.ClusterTrustBundle != nil:
			errs = append(errs, fmt.Errorf("clusterTrustBundle projections are not supported yet"))
		default:
			errs = append(errs, fmt.Errorf("a projection of an unknown type is not supported"))
		}
	}
	return out, utilerrors.NewAggregate(errs)
}
