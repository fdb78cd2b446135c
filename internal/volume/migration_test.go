package volume

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func inTreePV(name string, src corev1.PersistentVolumeSource) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: src,
		},
	}
}

// The seeds' cloud volumes: translated to their vendors' CSI drivers with
// upstream's rules; without the driver on the node, the error names it as
// the kubelet does. Types upstream did not migrate are refused by name.
func TestMigratedInTreeVolumes(t *testing.T) {
	e := newEnv(t, node1)
	for _, tc := range []struct {
		name string
		src  corev1.PersistentVolumeSource
		want string
	}{
		{"ebs", corev1.PersistentVolumeSource{AWSElasticBlockStore: &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: "vol-0123", FSType: "ext4"}},
			"kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name ebs.csi.aws.com not found in the list of registered CSI drivers"},
		{"gce", corev1.PersistentVolumeSource{GCEPersistentDisk: &corev1.GCEPersistentDiskVolumeSource{PDName: "disk-1"}},
			"driver name pd.csi.storage.gke.io not found in the list of registered CSI drivers"},
		{"cinder", corev1.PersistentVolumeSource{Cinder: &corev1.CinderPersistentVolumeSource{VolumeID: "c-1"}},
			"driver name cinder.csi.openstack.org not found"},
		{"vsphere", corev1.PersistentVolumeSource{VsphereVolume: &corev1.VsphereVirtualDiskVolumeSource{VolumePath: "[ds] v.vmdk"}},
			"driver name csi.vsphere.vmware.com not found"},
		{"portworx", corev1.PersistentVolumeSource{PortworxVolume: &corev1.PortworxVolumeSource{VolumeID: "px-1"}},
			"driver name pxd.portworx.com not found"},
		{"rbd", corev1.PersistentVolumeSource{RBD: &corev1.RBDPersistentVolumeSource{CephMonitors: []string{"10.0.0.1:6789"}, RBDImage: "img"}},
			`PersistentVolume "rbd" is a rbd volume, which moorage cannot mount in-tree`},
		{"nfs", corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/export"}},
			`PersistentVolume "nfs" is a nfs volume`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.get.bind(claim("claim-"+tc.name), inTreePV(tc.name, tc.src))
			pod := newPod("pod-"+tc.name, claimVolume("data", "claim-"+tc.name, false))
			if got := setUpErr(t, e.m, pod); !strings.Contains(got, tc.want) {
				t.Errorf("SetUp error = %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

func TestMigratedInlineVolume(t *testing.T) {
	e := newEnv(t, node1)
	pod := newPod("inline", corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{
		AWSElasticBlockStore: &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: "vol-0abc"},
	}})
	if got := setUpErr(t, e.m, pod); !strings.Contains(got, "driver name ebs.csi.aws.com not found in the list of registered CSI drivers") {
		t.Errorf("SetUp error = %q", got)
	}
	pod = newPod("inline-iscsi", corev1.Volume{Name: "lun", VolumeSource: corev1.VolumeSource{
		ISCSI: &corev1.ISCSIVolumeSource{TargetPortal: "10.0.0.1:3260", IQN: "iqn.2001-04.com.example:storage", Lun: 0},
	}})
	if got := setUpErr(t, e.m, pod); !strings.Contains(got, "iscsi volumes cannot be mounted in-tree by moorage") {
		t.Errorf("SetUp error = %q", got)
	}
}
