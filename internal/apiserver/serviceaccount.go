package apiserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
)

// What upstream's ServiceAccount admission plugin adds to pods.
const (
	defaultServiceAccountName = "default"
	// serviceAccountVolumePrefix + five random characters names the volume.
	serviceAccountVolumePrefix = "kube-api-access-"
	// serviceAccountMountPath is where every container finds its token,
	// the cluster's CA and its namespace.
	serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// rootCAConfigMap holds the cluster's CA in every namespace under the
	// key ca.crt (published by internal/controller/serviceaccount).
	rootCAConfigMap = "kube-root-ca.crt"
	// enforceMountableSecretsAnnotation on an account limits its pods to
	// the secrets it lists.
	enforceMountableSecretsAnnotation = "kubernetes.io/enforce-mountable-secrets"
	// The token lifetime the volume asks for (see
	// serviceaccount.WarnOnlyExpirationSeconds).
	serviceAccountTokenSeconds = 60*60 + 7
)

// admitServiceAccount is upstream's ServiceAccount admission plugin on pod
// create: the pod runs as `default` unless it names an account; the
// account must exist (`default` is looked up for a while, as the
// serviceaccount controller may not have made it yet in a new namespace);
// unless the pod, then the account, sets automountServiceAccountToken to
// false, every container and init container mounts a kube-api-access-xxxxx
// projected volume (token, ca.crt, namespace) read-only at
// serviceAccountMountPath, where it has nothing mounted yet; a pod without
// imagePullSecrets gets the account's. An account annotated
// kubernetes.io/enforce-mountable-secrets: "true" limits the pod to the
// secrets it lists.
func (s *Server) admitServiceAccount(ctx context.Context, pod *corev1.Pod) error {
	// v1's deprecated serviceAccount names the account when
	// serviceAccountName does not, and always echoes it, as upstream's
	// conversion makes them.
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = pod.Spec.DeprecatedServiceAccount
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = defaultServiceAccountName
	}
	pod.Spec.DeprecatedServiceAccount = pod.Spec.ServiceAccountName
	forbidden := func(err error) error {
		return apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, err)
	}
	sa, err := s.lookUpServiceAccount(ctx, pod.Namespace, pod.Spec.ServiceAccountName)
	if err != nil {
		return forbidden(fmt.Errorf("error looking up service account %s/%s: %w", pod.Namespace, pod.Spec.ServiceAccountName, err))
	}
	if automount(pod, sa) {
		mountServiceAccountToken(pod)
	}
	if len(pod.Spec.ImagePullSecrets) == 0 {
		for _, ref := range sa.ImagePullSecrets {
			pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: ref.Name})
		}
	}
	if enforce, _ := strconv.ParseBool(sa.Annotations[enforceMountableSecretsAnnotation]); enforce {
		if err := limitSecretReferences(sa, pod); err != nil {
			return forbidden(err)
		}
	}
	return nil
}

// lookUpServiceAccount reads an account; `default` is tried ten times,
// 100-200 ms apart, as upstream. A missing account is upstream's NotFound
// of the (singular) resource serviceaccount.
func (s *Server) lookUpServiceAccount(ctx context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	attempts := 1
	if name == defaultServiceAccountName {
		attempts = 10
	}
	interval := time.Duration(100+rand.IntN(100)) * time.Millisecond
	res := s.resourceByPlural("serviceaccounts")
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(interval):
			}
		}
		obj, _, err := s.objects.get(ctx, res, ns, name)
		if err == nil {
			return obj.(*corev1.ServiceAccount), nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	return nil, apierrors.NewNotFound(corev1.Resource("serviceaccount"), name)
}

// automount: the pod's choice, then the account's, else true.
func automount(pod *corev1.Pod, sa *corev1.ServiceAccount) bool {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken
	}
	if sa.AutomountServiceAccountToken != nil {
		return *sa.AutomountServiceAccountToken
	}
	return true
}

// mountServiceAccountToken adds the kube-api-access volume (or reuses one
// the pod already has) and mounts it in every container that has nothing
// at serviceAccountMountPath.
func mountServiceAccountToken(pod *corev1.Pod) {
	name := ""
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, serviceAccountVolumePrefix) {
			name = v.Name
			break
		}
	}
	hasVolume := name != ""
	if !hasVolume {
		name = serviceAccountVolumePrefix + randomSuffix()
	}
	mount := corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: serviceAccountMountPath}
	mounted := false
	add := func(containers []corev1.Container) {
		for i := range containers {
			c := &containers[i]
			if !hasMountAt(c.VolumeMounts, serviceAccountMountPath) {
				c.VolumeMounts = append(c.VolumeMounts, mount)
				mounted = true
			}
		}
	}
	add(pod.Spec.InitContainers)
	add(pod.Spec.Containers)
	if mounted && !hasVolume {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: tokenVolumeSource()}})
	}
}

func hasMountAt(mounts []corev1.VolumeMount, path string) bool {
	for _, m := range mounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

// tokenVolumeSource is upstream's projected volume: the token (bound to
// the pod by the kubelet), the cluster's CA and the pod's namespace, with
// the default mode written out (admission runs after defaulting).
func tokenVolumeSource() *corev1.ProjectedVolumeSource {
	return &corev1.ProjectedVolumeSource{
		DefaultMode: ptr.To(corev1.ProjectedVolumeSourceDefaultMode),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](serviceAccountTokenSeconds)}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: rootCAConfigMap},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}}},
		},
	}
}

// limitSecretReferences refuses a pod that uses a secret its account does
// not list: in a secret volume, an env var or envFrom of a container or init
// container, or imagePullSecrets (which must be in the account's).
func limitSecretReferences(sa *corev1.ServiceAccount, pod *corev1.Pod) error {
	mountable := map[string]bool{}
	for _, ref := range sa.Secrets {
		mountable[ref.Name] = true
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && !mountable[v.Secret.SecretName] {
			return fmt.Errorf("volume with secret.secretName=%q is not allowed because service account %s does not reference that secret", v.Secret.SecretName, sa.Name)
		}
	}
	check := func(kind string, containers []corev1.Container) error {
		for _, c := range containers {
			for _, env := range c.Env {
				if env.ValueFrom != nil && env.ValueFrom.SecretKeyRef != nil && !mountable[env.ValueFrom.SecretKeyRef.Name] {
					return fmt.Errorf("%s %s with envVar %s referencing secret.secretName=%q is not allowed because service account %s does not reference that secret", kind, c.Name, env.Name, env.ValueFrom.SecretKeyRef.Name, sa.Name)
				}
			}
			for _, from := range c.EnvFrom {
				if from.SecretRef != nil && !mountable[from.SecretRef.Name] {
					return fmt.Errorf("%s %s with envFrom referencing secret.secretName=%q is not allowed because service account %s does not reference that secret", kind, c.Name, from.SecretRef.Name, sa.Name)
				}
			}
		}
		return nil
	}
	if err := check("init container", pod.Spec.InitContainers); err != nil {
		return err
	}
	if err := check("container", pod.Spec.Containers); err != nil {
		return err
	}
	pullable := map[string]bool{}
	for _, ref := range sa.ImagePullSecrets {
		pullable[ref.Name] = true
	}
	for i, ref := range pod.Spec.ImagePullSecrets {
		if !pullable[ref.Name] {
			return fmt.Errorf("imagePullSecrets[%d].name=%q is not allowed because service account %s does not reference that imagePullSecret", i, ref.Name, sa.Name)
		}
	}
	return nil
}
