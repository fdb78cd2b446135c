package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// volumeImages are the built-in driver's volume images under a data dir
// (the agent's csi/local/volumes).
func volumeImages(t *testing.T, dataDir string) []string {
	t.Helper()
	out, err := filepath.Glob(filepath.Join(dataDir, "agent", "csi", "local", "volumes", "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCSICrashBetweenCreateVolumeAndPV: `moorage up` is killed (SIGKILL,
// from inside, at exactly the moment: CreateVolume has succeeded, the PV
// is not created yet). After a restart on the same data dir the claim is
// bound once to pvc-<uid>, the driver holds one volume, and deleting the
// claim leaves none: nothing leaked, nothing made twice.
func TestCSICrashBetweenCreateVolumeAndPV(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	dir := t.TempDir()
	m, err := launchEnv(dir, []string{"MOORAGE_TEST_CRASH=after-create-volume"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.kill()
		_ = exec.Command(moorageBin, "killall", "--data-dir", dir).Run()
		os.RemoveAll(m.tmp)
	})
	m.hostImage(t, "busybox")
	m.firstNode(t, v)
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "dynamic.yaml", dynamicProvisioning)), "persistentvolumeclaim/data created")
	select {
	case <-m.done:
	case <-time.After(podTimeout):
		t.Fatalf("moorage did not crash after CreateVolume\n%s", m.Output())
	}
	if m.exit == 0 {
		t.Fatalf("moorage exited 0; want killed\n%s", m.Output())
	}
	if imgs := volumeImages(t, dir); len(imgs) != 1 {
		t.Fatalf("after the crash the driver holds %d volumes (%v), want the 1 just created", len(imgs), imgs)
	}

	m2 := startMoorageIn(t, dir)
	waitPodRow(t, m2, v, "default", "writer", "1/1", "Running")
	var pvc corev1.PersistentVolumeClaim
	m2.getJSON(t, v, &pvc, "pvc", "data")
	pvName := "pvc-" + string(pvc.UID)
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != pvName {
		t.Fatalf("claim after the restart: phase %s, volume %q, want Bound to %s", pvc.Status.Phase, pvc.Spec.VolumeName, pvName)
	}
	var pvs corev1.PersistentVolumeList
	m2.getJSON(t, v, &pvs, "pv")
	if len(pvs.Items) != 1 || pvs.Items[0].Name != pvName {
		t.Errorf("PVs after the restart: %d, want only %s", len(pvs.Items), pvName)
	}
	if imgs := volumeImages(t, dir); len(imgs) != 1 {
		t.Errorf("after the restart the driver holds %d volumes (%v), want 1", len(imgs), imgs)
	}

	expectOK(t, m2.kubectl(t, v, "delete", "pod", "writer", "--wait=true"))
	expectOK(t, m2.kubectl(t, v, "delete", "pvc", "data", "--wait=true"))
	if !eventually(podTimeout, func() bool {
		return m2.kubectl(t, v, "get", "pv", pvName).Code != 0 && len(volumeImages(t, dir)) == 0
	}) {
		t.Errorf("after deleting the claim: PV %s or a volume image remains (%v)\n%s", pvName, volumeImages(t, dir), m2.kubectl(t, v, "get", "pv"))
	}
}
