package volume

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A driver whose CSIDriver sets podInfoOnMount gets the pod's name,
// namespace, uid and service account (and ephemeral=false) in the volume
// context of NodePublish, beside the volume's attributes; others get the
// attributes alone.
func TestCSIPodInfoOnMount(t *testing.T) {
	drivers := map[string]*storagev1.CSIDriver{
		"info.example.com":   {ObjectMeta: metav1.ObjectMeta{Name: "info.example.com"}, Spec: storagev1.CSIDriverSpec{PodInfoOnMount: ptr(true)}},
		"noinfo.example.com": {ObjectMeta: metav1.ObjectMeta{Name: "noinfo.example.com"}, Spec: storagev1.CSIDriverSpec{PodInfoOnMount: ptr(false)}},
	}
	m := NewManager(t.TempDir(), newFakeGetter(), Options{CSIDriver: func(_ context.Context, name string) (*storagev1.CSIDriver, error) {
		if d, ok := drivers[name]; ok {
			return d, nil
		}
		return nil, apierrors.NewNotFound(storagev1.Resource("csidrivers"), name)
	}})
	pod := newPod("web-0")
	pod.Namespace, pod.Spec.ServiceAccountName = "shop", "web"
	attrs := map[string]string{"share": "a"}
	for _, tc := range []struct {
		driver string
		want   map[string]string
	}{
		{"info.example.com", map[string]string{"share": "a", "csi.storage.k8s.io/pod.name": "web-0", "csi.storage.k8s.io/pod.namespace": "shop",
			"csi.storage.k8s.io/pod.uid": string(pod.UID), "csi.storage.k8s.io/serviceAccount.name": "web", "csi.storage.k8s.io/ephemeral": "false"}},
		{"noinfo.example.com", attrs},
		{"none.example.com", attrs},
	} {
		info, modeErr, err := m.csiPublishInfo(context.Background(), tc.driver, pod)
		if err != nil || modeErr != nil {
			t.Fatal(err, modeErr)
		}
		v := &csiVolume{src: &corev1.CSIPersistentVolumeSource{Driver: tc.driver, VolumeAttributes: attrs}, podInfo: info}
		got := v.publishContext()
		if len(got) != len(tc.want) {
			t.Errorf("%s: volume context %v, want %v", tc.driver, got, tc.want)
		}
		for k, w := range tc.want {
			if got[k] != w {
				t.Errorf("%s: volume context[%s] = %q, want %q", tc.driver, k, got[k], w)
			}
		}
	}
	if len(attrs) != 1 {
		t.Errorf("the PV's attributes were changed: %v", attrs)
	}
	drivers["ephemeral.example.com"] = &storagev1.CSIDriver{Spec: storagev1.CSIDriverSpec{VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}}}
	_, modeErr, err := m.csiPublishInfo(context.Background(), "ephemeral.example.com", pod)
	if err != nil || modeErr == nil || modeErr.Error() != `volume mode "Persistent" not supported by driver ephemeral.example.com (only supports ["Ephemeral"])` {
		t.Errorf("a driver of ephemeral volumes only: %v, %v", modeErr, err)
	}
}
