package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// TestLifecycle: one data dir, one server at a time; SIGTERM stops it
// cleanly; a restart keeps every object and resourceVersions keep growing.
func TestLifecycle(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	dir := t.TempDir()
	m := startMoorageIn(t, dir)

	m.mustKubectl(t, v, "create", "namespace", "seed001")
	for _, o := range seedObjects {
		if o.Seed == "seed001" {
			m.mustKubectl(t, v, "apply", "-n", "seed001", "-f", testdata(o.File))
		}
	}
	m.mustKubectl(t, v, "scale", "sts", "mysql", "-n", "seed001", "--replicas=5")
	before := settledSnapshot(t, m, v)

	t.Run("second-instance-refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, moorageBin, "up", "--data-dir", dir, "--listen", "127.0.0.1:0")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("a second moorage on the same data dir kept running instead of refusing\noutput:\n%s", out)
		}
		if err == nil {
			t.Fatalf("a second moorage on the same data dir exited 0\noutput:\n%s", out)
		}
		if !strings.Contains(string(out), dir) {
			t.Errorf("the refusal should name the data dir %s\noutput:\n%s", dir, out)
		}
		if strings.Contains(string(out), "is ready at") {
			t.Errorf("the second instance printed a ready line\noutput:\n%s", out)
		}
		// the first one is unharmed
		m.mustKubectl(t, v, "get", "--raw", "/readyz")
		if got := snapshot(t, m, v); fmt.Sprint(got.objects) != fmt.Sprint(before.objects) {
			t.Errorf("the refused start changed the state:\n%v\n%v", before.objects, got.objects)
		}
	})

	t.Run("sigterm-exits-0", func(t *testing.T) {
		code, err := m.Stop()
		if err != nil {
			t.Fatalf("%v\noutput:\n%s", err, m.Output())
		}
		if code != 0 {
			t.Fatalf("moorage exited %d after SIGTERM, want 0\noutput:\n%s", code, m.Output())
		}
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("data dir gone after shutdown: %v", err)
		}
	})

	t.Run("restart-keeps-everything", func(t *testing.T) {
		m2 := startMoorageIn(t, dir)
		if m2.URL == m.URL {
			t.Logf("restarted on the same URL %s (port 0 happened to give the same port)", m2.URL)
		}
		after := snapshot(t, m2, v)
		for k, want := range before.objects {
			if strings.HasPrefix(k, "ConfigMap/kube-public/cluster-info") {
				continue // it publishes the server's address, and port 0 picked another
			}
			if got, ok := after.objects[k]; !ok {
				t.Errorf("%s is gone after the restart", k)
			} else if got != want {
				t.Errorf("%s changed across the restart:\n before %s\n after  %s", k, want, got)
			}
		}
		if len(after.objects) != len(before.objects) {
			t.Errorf("%d objects before the restart, %d after", len(before.objects), len(after.objects))
		}
		var sts struct {
			Spec struct{ Replicas int }
		}
		m2.getJSON(t, v, &sts, "sts", "mysql", "-n", "seed001")
		if sts.Spec.Replicas != 5 {
			t.Errorf("spec.replicas %d after the restart, want 5", sts.Spec.Replicas)
		}
		// resourceVersions continue from where they were
		out := m2.mustKubectl(t, v, "create", "configmap", "after-restart", "-n", "seed001", "--from-literal=a=b", "-o", "jsonpath={.metadata.resourceVersion}")
		rv, err := strconv.ParseUint(out, 10, 64)
		if err != nil {
			t.Fatalf("resourceVersion %q of a new object is not a number: %v", out, err)
		}
		if rv <= before.maxRV {
			t.Errorf("resourceVersion %d of an object created after the restart is not above %d, the largest before it", rv, before.maxRV)
		}
		if after.listRV < before.listRV {
			t.Errorf("list resourceVersion went back from %d to %d", before.listRV, after.listRV)
		}
		out = m2.mustKubectl(t, v, "patch", "cm", "mysql", "-n", "seed001", "-p", `{"data":{"x":"y"}}`, "-o", "jsonpath={.metadata.resourceVersion}")
		if rv2, _ := strconv.ParseUint(out, 10, 64); rv2 <= rv {
			t.Errorf("resourceVersion %s of an update is not above %d", out, rv)
		}
		// a watch from a resourceVersion before the restart sees the later events
		w := m2.kubectlBackground(t, v, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/seed001/configmaps?watch=1&resourceVersion=%d", before.listRV))
		if _, ok := w.WaitLine(10*time.Second, func(l string) bool { return strings.Contains(l, `"after-restart"`) }); !ok {
			t.Errorf("a watch from resourceVersion %d (before the restart) did not replay the creation of after-restart\n%s", before.listRV, w.Output())
		}
		w.Stop()
		// the same token still works, from the rewritten kubeconfig
		if code, err := m2.Stop(); err != nil || code != 0 {
			t.Errorf("second server: exit %d, %v\n%s", code, err, m2.Output())
		}
	})
}

type stateSnapshot struct {
	objects map[string]string // kind/ns/name → uid rv spec digest
	maxRV   uint64
	listRV  uint64
}

// settledSnapshot waits until the controllers are done with what was just
// created (the binder binding task-pv-claim, the StatefulSet controller
// creating its first claim): until two snapshots a second apart agree.
func settledSnapshot(t *testing.T, m *moorage, v int) stateSnapshot {
	t.Helper()
	prev := snapshot(t, m, v)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		cur := snapshot(t, m, v)
		if fmt.Sprint(cur.objects) == fmt.Sprint(prev.objects) {
			return cur
		}
		prev = cur
	}
	t.Fatalf("the objects kept changing for a minute:\n%v", prev.objects)
	return prev
}

// snapshot lists the seed001 objects with their uid, resourceVersion and
// creation time.
func snapshot(t *testing.T, m *moorage, v int) stateSnapshot {
	t.Helper()
	s := stateSnapshot{objects: map[string]string{}}
	var list struct {
		Metadata struct{ ResourceVersion string }
		Items    []struct {
			Kind     string
			Metadata struct {
				Name, Namespace, UID, ResourceVersion, CreationTimestamp string
				Generation                                               int
			}
			Spec json.RawMessage
			Data map[string]string
		}
	}
	m.getJSON(t, v, &list, "pv,pvc,cm,svc,sts,sc,ns", "-A")
	for _, it := range list.Items {
		md := it.Metadata
		s.objects[it.Kind+"/"+md.Namespace+"/"+md.Name] = fmt.Sprintf("uid=%s rv=%s created=%s generation=%d spec=%s data=%v", md.UID, md.ResourceVersion, md.CreationTimestamp, md.Generation, it.Spec, it.Data)
		rv, err := strconv.ParseUint(md.ResourceVersion, 10, 64)
		if err != nil {
			t.Fatalf("%s/%s: resourceVersion %q is not a number", it.Kind, md.Name, md.ResourceVersion)
		}
		if rv > s.maxRV {
			s.maxRV = rv
		}
	}
	var cms struct {
		Metadata struct{ ResourceVersion string }
	}
	m.getJSON(t, v, &cms, "cm", "-n", "seed001")
	s.listRV, _ = strconv.ParseUint(cms.Metadata.ResourceVersion, 10, 64)
	return s
}

// TestGarbageCollection: ownerReferences, the three propagation policies.
func TestGarbageCollection(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "gc")
	owned := func(owner, child string) {
		t.Helper()
		uid := m.mustKubectl(t, v, "create", "configmap", owner, "-n", "gc", "--from-literal=a=b", "-o", "jsonpath={.metadata.uid}")
		f := m.writeFile(t, child+".yaml", fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: %s
  namespace: gc
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: %s
    uid: %s
    blockOwnerDeletion: true
data:
  c: d
`, child, owner, uid))
		m.mustKubectl(t, v, "create", "-f", f)
	}

	t.Run("background", func(t *testing.T) {
		owned("bg-owner", "bg-child")
		expectOK(t, m.kubectl(t, v, "delete", "cm", "bg-owner", "-n", "gc"), `configmap "bg-owner" deleted`)
		r := m.kubectl(t, v, "wait", "--for=delete", "cm/bg-child", "-n", "gc", "--timeout=30s")
		if r.Code != 0 {
			t.Errorf("the garbage collector should delete the dependent of a deleted owner\n%s", r)
		}
	})
	t.Run("foreground", func(t *testing.T) {
		owned("fg-owner", "fg-child")
		expectOK(t, m.kubectl(t, v, "delete", "cm", "fg-owner", "-n", "gc", "--cascade=foreground", "--wait=false"), `configmap "fg-owner" deleted`)
		var cm corev1.ConfigMap
		if r := m.kubectl(t, v, "get", "cm", "fg-owner", "-n", "gc", "-o", "json"); r.Code == 0 {
			_ = json.Unmarshal([]byte(r.Stdout), &cm)
			if cm.DeletionTimestamp == nil || !contains(cm.Finalizers, "foregroundDeletion") {
				t.Errorf("a foreground delete leaves the owner with a deletionTimestamp and the foregroundDeletion finalizer: %v %v", cm.DeletionTimestamp, cm.Finalizers)
			}
		}
		for _, n := range []string{"fg-child", "fg-owner"} {
			if r := m.kubectl(t, v, "wait", "--for=delete", "cm/"+n, "-n", "gc", "--timeout=30s"); r.Code != 0 {
				t.Errorf("foreground deletion should remove %s\n%s", n, r)
			}
		}
	})
	t.Run("orphan", func(t *testing.T) {
		owned("or-owner", "or-child")
		expectOK(t, m.kubectl(t, v, "delete", "cm", "or-owner", "-n", "gc", "--cascade=orphan"), `configmap "or-owner" deleted`)
		m.expectNotFound(t, v, "cm", "or-owner", "-n", "gc")
		var cm corev1.ConfigMap
		ok := eventually(30*time.Second, func() bool {
			m.getJSON(t, v, &cm, "cm", "or-child", "-n", "gc")
			return len(cm.OwnerReferences) == 0
		})
		if !ok {
			t.Errorf("an orphaned dependent stays, without its ownerReference: %+v", cm.OwnerReferences)
		}
	})
}

// TestStorageAdmission: what upstream's admission plugins do to storage
// objects on create (DefaultStorageClass, StorageObjectInUseProtection).
func TestStorageAdmission(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "adm")
	m.mustKubectl(t, v, "apply", "-f", testdata("seed000-standard.yaml"), "-f", testdata("seed002-local-storage.yaml"))
	m.mustKubectl(t, v, "annotate", "sc", "standard", "storageclass.kubernetes.io/is-default-class=true")

	// a claim without a class gets the default class
	m.mustKubectl(t, v, "apply", "-n", "adm", "-f", testdata("seed000-persistent-volume-claim.yaml"))
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, v, &pvc, "pvc", "persistent-volume-claim", "-n", "adm")
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "standard" {
		t.Errorf("DefaultStorageClass admission: a PVC without storageClassName gets the default class \"standard\", got %v", pvc.Spec.StorageClassName)
	}
	// "" means no class, and stays ""
	f := m.writeFile(t, "noclass.yaml", strings.Replace(readFile(t, testdata("seed000-persistent-volume-claim.yaml")), "name: persistent-volume-claim", "name: no-class", 1)+" storageClassName: \"\"\n")
	m.mustKubectl(t, v, "apply", "-n", "adm", "-f", f)
	m.getJSON(t, v, &pvc, "pvc", "no-class", "-n", "adm")
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" {
		t.Errorf("storageClassName \"\" must stay \"\", got %v", pvc.Spec.StorageClassName)
	}
	// a claim that names a class keeps it
	m.mustKubectl(t, v, "apply", "-n", "adm", "-f", testdata("seed001-task-pv-claim.yaml"))
	m.getJSON(t, v, &pvc, "pvc", "task-pv-claim", "-n", "adm")
	if *pvc.Spec.StorageClassName != "manual" {
		t.Errorf("storageClassName changed to %q", *pvc.Spec.StorageClassName)
	}
	// the beta annotation counts as a class
	m.mustKubectl(t, v, "apply", "-n", "adm", "-f", testdata("seed000-efs.yaml"))
	m.getJSON(t, v, &pvc, "pvc", "efs", "-n", "adm")
	if pvc.Spec.StorageClassName != nil {
		t.Errorf("a PVC with the beta storage-class annotation gets no default storageClassName, got %q", *pvc.Spec.StorageClassName)
	}
	// two defaults: the newest wins
	m.mustKubectl(t, v, "annotate", "sc", "local-storage", "storageclass.kubernetes.io/is-default-class=true")
	var scs storagev1.StorageClassList
	m.getJSON(t, v, &scs, "sc")
	r := m.kubectl(t, v, "get", "sc")
	if row(r.Stdout, "local-storage", "(default)") == "" || row(r.Stdout, "standard", "(default)") == "" {
		t.Errorf("both default classes carry the (default) marker\n%s", r)
	}

}
