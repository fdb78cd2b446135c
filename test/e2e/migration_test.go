package e2e

import (
	"regexp"
	"testing"
	"time"
)

// ebsVolume is the seeds' AWS EBS PersistentVolume (an in-tree type that
// upstream migrated to the vendor's CSI driver), a claim and a pod.
const ebsVolume = `apiVersion: v1
kind: PersistentVolume
metadata:
  name: ebs-pv
spec:
  capacity:
    storage: 5Gi
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  awsElasticBlockStore:
    volumeID: vol-0123456789abcdef0
    fsType: ext4
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ebs-claim
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: ebs-pv
  resources:
    requests:
      storage: 5Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: ebs-pod
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: ebs-claim
`

// TestCSIMigrationNamesTheDriver: an awsElasticBlockStore volume binds as
// any volume, and its pod is set up through the CSI driver upstream
// migrated the type to; with no such driver on the node, the pod's event
// names it in the kubelet's words.
func TestCSIMigrationNamesTheDriver(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	m.firstNode(t, v)
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "ebs.yaml", ebsVolume)),
		"persistentvolume/ebs-pv created", "persistentvolumeclaim/ebs-claim created", "pod/ebs-pod created")
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "ebs-pod"},
		`(?m)^Status:\s+Pending$`,
		`(?m)^\s+Warning\s+FailedMount\s+.*`+regexp.QuoteMeta(`MountVolume.MountDevice failed for volume "ebs-pv" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name ebs.csi.aws.com not found in the list of registered CSI drivers`))
	r := m.kubectl(t, v, "get", "pvc", "ebs-claim")
	checkCol(t, r, "STATUS", "Bound", "ebs-claim")
	expectOK(t, m.kubectl(t, v, "delete", "pod", "ebs-pod", "--wait=true", "--timeout="+(30*time.Second).String()))
}
