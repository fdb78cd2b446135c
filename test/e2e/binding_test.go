package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The PersistentVolume controller (binder) through the real kubectl: the
// seeds' binding scenarios, and what upstream's kube-controller-manager makes
// kubectl print for them. Manifests that are not the seeds' own live in
// testdata/binding/.

const (
	bindTimeout = 30 * time.Second // a bind, a release, a reclaim
	// upstream's PV controller resyncs every 15 s; a claim that waits for a
	// change it does not watch (a new default class) binds within a resync
	resyncTimeout = 45 * time.Second

	msgNoClass = "no persistent volumes available for this claim and no storage class is set"
)

var (
	pvColumns  = []string{"NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"}
	pvcColumns = []string{"NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"}
)

// TestBindingSeed001: seed 001's task-pv-volume and task-pv-claim, applied
// together as the seed does, bind; `kubectl get pv` and `kubectl get pvc`
// print the seed's columns and values, with kubectl 1.33 and 1.27.
func TestBindingSeed001(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	m := startMoorage(t)
	expectOK(t, m.kubectl(t, defaultVersion, "apply", "-f", testdata("seed001-task-pv-volume.yaml"), "-f", testdata("seed001-task-pv-claim.yaml")),
		"persistentvolume/task-pv-volume created", "persistentvolumeclaim/task-pv-claim created")

	for _, v := range []int{defaultVersion, 27} {
		t.Run(fmt.Sprintf("kubectl-1.%d", v), func(t *testing.T) {
			// the seed's `kubectl get pv`:
			// task-pv-volume   10Gi   RWO   Retain   Bound   default/task-pv-claim   manual      3m23s
			r := waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"task-pv-volume"}, map[string]string{
				"CAPACITY": "10Gi", "ACCESS MODES": "RWO", "RECLAIM POLICY": "Retain", "STATUS": "Bound",
				"CLAIM": "default/task-pv-claim", "STORAGECLASS": "manual", "VOLUMEATTRIBUTESCLASS": "<unset>", "REASON": "",
			})
			expectHeader(t, r, pvColumns...)
			// the seed's `kubectl get pvc`:
			// task-pv-claim   Bound    task-pv-volume   10Gi   RWO   manual   21s
			r = waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{"task-pv-claim"}, map[string]string{
				"STATUS": "Bound", "VOLUME": "task-pv-volume", "CAPACITY": "10Gi", "ACCESS MODES": "RWO", "STORAGECLASS": "manual",
			})
			expectHeader(t, r, pvcColumns...)

			expectDescribe(t, m, v, []string{"pv", "task-pv-volume"},
				`(?m)^Name:\s+task-pv-volume$`, `(?m)^Labels:\s+type=local$`,
				`(?m)^Annotations:\s+pv.kubernetes.io/bound-by-controller: yes$`,
				`(?m)^Finalizers:\s+\[kubernetes.io/pv-protection\]$`,
				`(?m)^StorageClass:\s+manual$`, `(?m)^Status:\s+Bound$`, `(?m)^Claim:\s+default/task-pv-claim$`,
				`(?m)^Reclaim Policy:\s+Retain$`, `(?m)^Access Modes:\s+RWO$`, `(?m)^Capacity:\s+10Gi$`, `(?m)^Message:\s*$`,
				`(?m)^\s+Type:\s+HostPath \(bare host directory volume\)$`, `(?m)^\s+Path:\s+/mnt/data$`)
			expectDescribe(t, m, v, []string{"pvc", "task-pv-claim"},
				`(?m)^Name:\s+task-pv-claim$`, `(?m)^Namespace:\s+default$`, `(?m)^StorageClass:\s+manual$`,
				`(?m)^Status:\s+Bound$`, `(?m)^Volume:\s+task-pv-volume$`,
				`(?m)^Annotations:\s+pv.kubernetes.io/bind-completed: yes\n\s+pv.kubernetes.io/bound-by-controller: yes$`,
				`(?m)^Finalizers:\s+\[kubernetes.io/pvc-protection\]$`,
				`(?m)^Capacity:\s+10Gi$`, `(?m)^Access Modes:\s+RWO$`, `(?m)^VolumeMode:\s+Filesystem$`, `(?m)^Used By:\s+<none>$`)
		})
	}

	// the objects behind the table: both pointers, the claim's uid, the
	// claim's status copied from the volume
	var pv corev1.PersistentVolume
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, defaultVersion, &pv, "pv", "task-pv-volume")
	m.getJSON(t, defaultVersion, &pvc, "pvc", "task-pv-claim")
	checkBoundPair(t, &pv, &pvc)
}

// TestBindingSelector: seed 000's storage-claim (80Gi, class normal,
// matchLabels release=stable and matchExpressions capacity in (80Gi, 100Gi))
// takes the smallest volume that passes its selector; seed 000's pv-1 (100Gi)
// is what the seed binds it to.
func TestBindingSelector(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	for _, ns := range []string{"seed000", "seed000b", "seed000c"} {
		m.mustKubectl(t, v, "create", "namespace", ns)
	}
	r := m.kubectl(t, v, "apply", "-f", testdata("seed000-pv-1.yaml"), "-f", testdata("binding/selector-pvs.yaml"))
	expectOK(t, r, "persistentvolume/pv-1 created", "persistentvolume/pv-0-canary created", "persistentvolume/pv-2 created", "persistentvolume/pv-3 created")
	if !strings.Contains(r.Stderr, warnRecycle) {
		t.Errorf("pv-1 has reclaim policy Recycle: kubectl prints upstream's deprecation warning %q\n%s", warnRecycle, r)
	}
	// every volume Available (seen by the controller) before the claim comes
	for _, name := range []string{"pv-1", "pv-0-canary", "pv-2", "pv-3"} {
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{name}, map[string]string{"STATUS": "Available", "CLAIM": ""})
	}

	// pv-0-canary (80Gi) fails matchLabels, pv-3 (90Gi) fails matchExpressions:
	// pv-2 (80Gi) is the smallest that passes
	expectOK(t, m.kubectl(t, v, "apply", "-n", "seed000", "-f", testdata("seed000-storage-claim.yaml")), "persistentvolumeclaim/storage-claim created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "seed000"}, []string{"storage-claim"}, map[string]string{
		"STATUS": "Bound", "VOLUME": "pv-2", "CAPACITY": "80Gi", "ACCESS MODES": "RWO,ROX", "STORAGECLASS": "normal",
	})
	// the same claim in another namespace: pv-1, as in the seed
	expectOK(t, m.kubectl(t, v, "apply", "-n", "seed000b", "-f", testdata("seed000-storage-claim.yaml")), "persistentvolumeclaim/storage-claim created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "seed000b"}, []string{"storage-claim"}, map[string]string{
		"STATUS": "Bound", "VOLUME": "pv-1", "CAPACITY": "100Gi", "ACCESS MODES": "RWO,ROX", "STORAGECLASS": "normal",
	})
	r = waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"pv-1"}, map[string]string{
		"CAPACITY": "100Gi", "ACCESS MODES": "RWO,ROX", "RECLAIM POLICY": "Recycle", "STATUS": "Bound", "CLAIM": "seed000b/storage-claim", "STORAGECLASS": "normal",
	})
	checkCol(t, r, "CLAIM", "seed000/storage-claim", "pv-2")
	checkCol(t, r, "STATUS", "Available", "pv-0-canary")
	checkCol(t, r, "STATUS", "Available", "pv-3")

	// a third: nothing left passes the selector. Its class is set, so
	// upstream hands it to provisioning, and class normal does not exist.
	expectOK(t, m.kubectl(t, v, "apply", "-n", "seed000c", "-f", testdata("seed000-storage-claim.yaml")), "persistentvolumeclaim/storage-claim created")
	expectDescribeEventually(t, m, v, bindTimeout, []string{"pvc", "storage-claim", "-n", "seed000c"},
		`(?m)^Status:\s+Pending$`, `(?m)^Volume:\s*$`,
		`(?m)^\s+Warning\s+ProvisioningFailed\s+.*\s+persistentvolume-controller\s+storageclass.storage.k8s.io "normal" not found$`)
	checkCol(t, m.kubectl(t, v, "get", "pv"), "STATUS", "Available", "pv-0-canary")
	out := moorageExplain(t, m, "pvc/storage-claim", "-n", "seed000c")
	expectLines(t, out,
		`(?m)^PersistentVolumeClaim seed000c/storage-claim is Pending\.$`,
		`(?m)^\s+pv-0-canary\s+rejected \(selector\)\s+`,
		`(?m)^\s+pv-3\s+rejected \(selector\)\s+`,
		`(?m)^\s+pv-1\s+rejected \(boundToOther\)\s+.*seed000b/storage-claim`,
		`(?m)^\s+pv-2\s+rejected \(boundToOther\)\s+.*seed000/storage-claim`)
}

// TestBindingHostPathSeed000: seed 000's persistent-volume-1 (hostPath
// /tmp/data, class dir) and its claim persistent-volume-claim, created with
// `kubectl create` as the seed does. As written the claim names no class and
// (with no default class) cannot take a volume of class dir: upstream leaves
// it Pending and says so. The seed's output (the claim Bound, STORAGECLASS
// dir) is what a default class "dir" gives: upstream's PV controller assigns
// the default class to the unset claim retroactively and binds it.
func TestBindingHostPathSeed000(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed000-persistent-volume-1.yaml")), "persistentvolume/persistent-volume-1 created")
	// the seed's first `kubectl get pv`: 1Gi RWO Retain Available, class dir
	waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"persistent-volume-1"}, map[string]string{
		"CAPACITY": "1Gi", "ACCESS MODES": "RWO", "RECLAIM POLICY": "Retain", "STATUS": "Available", "CLAIM": "", "STORAGECLASS": "dir", "REASON": "",
	})
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed000-persistent-volume-claim.yaml")), "persistentvolumeclaim/persistent-volume-claim created")
	expectDescribeEventually(t, m, v, bindTimeout, []string{"pvc", "persistent-volume-claim"},
		`(?m)^StorageClass:\s*$`, `(?m)^Status:\s+Pending$`,
		`(?m)^\s+Normal\s+FailedBinding\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta(msgNoClass))
	checkCol(t, m.kubectl(t, v, "get", "pv"), "STATUS", "Available", "persistent-volume-1")

	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("binding/dir-class.yaml")), "storageclass.storage.k8s.io/dir created")
	// the seed's `kubectl get pvc`: persistent-volume-claim Bound persistent-volume-1 1Gi RWO dir
	waitCells(t, m, v, resyncTimeout, []string{"get", "pvc"}, []string{"persistent-volume-claim"}, map[string]string{
		"STATUS": "Bound", "VOLUME": "persistent-volume-1", "CAPACITY": "1Gi", "ACCESS MODES": "RWO", "STORAGECLASS": "dir",
	})
	// the seed's second `kubectl get pv`: Bound, default/persistent-volume-claim
	waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"persistent-volume-1"}, map[string]string{
		"CAPACITY": "1Gi", "ACCESS MODES": "RWO", "RECLAIM POLICY": "Retain", "STATUS": "Bound", "CLAIM": "default/persistent-volume-claim", "STORAGECLASS": "dir", "REASON": "",
	})
	expectDescribe(t, m, v, []string{"pv", "persistent-volume-1"},
		`(?m)^Name:\s+persistent-volume-1$`, `(?m)^Labels:\s+<none>$`,
		`(?m)^Annotations:\s+pv.kubernetes.io/bound-by-controller: yes$`,
		`(?m)^Finalizers:\s+\[kubernetes.io/pv-protection\]$`,
		`(?m)^StorageClass:\s+dir$`, `(?m)^Status:\s+Bound$`, `(?m)^Claim:\s+default/persistent-volume-claim$`,
		`(?m)^Reclaim Policy:\s+Retain$`, `(?m)^Access Modes:\s+RWO$`, `(?m)^VolumeMode:\s+Filesystem$`, `(?m)^Capacity:\s+1Gi$`,
		`(?m)^\s+Type:\s+HostPath \(bare host directory volume\)$`, `(?m)^\s+Path:\s+/tmp/data$`, `(?m)^\s+HostPathType:\s*$`)
	expectDescribe(t, m, v, []string{"pvc", "persistent-volume-claim"},
		`(?m)^Name:\s+persistent-volume-claim$`, `(?m)^Namespace:\s+default$`, `(?m)^StorageClass:\s+dir$`,
		`(?m)^Status:\s+Bound$`, `(?m)^Volume:\s+persistent-volume-1$`, `(?m)^Labels:\s+<none>$`,
		`(?m)^Annotations:\s+pv.kubernetes.io/bind-completed: yes\n\s+pv.kubernetes.io/bound-by-controller: yes$`,
		`(?m)^Finalizers:\s+\[kubernetes.io/pvc-protection\]$`,
		`(?m)^Capacity:\s+1Gi$`, `(?m)^Access Modes:\s+RWO$`, `(?m)^VolumeMode:\s+Filesystem$`)
	var pv corev1.PersistentVolume
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, v, &pv, "pv", "persistent-volume-1")
	m.getJSON(t, v, &pvc, "pvc", "persistent-volume-claim")
	checkBoundPair(t, &pv, &pvc)
}

// TestBindingEmptyVsUnsetClass: storageClassName "" asks for a volume without
// a class; unset means the default class when there is one (DefaultStorageClass
// admission), and "" otherwise.
func TestBindingEmptyVsUnsetClass(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "classes")
	classless := readFile(t, testdata("binding/classless-pv.yaml"))
	unset := readFile(t, testdata("binding/unset-class-claim.yaml"))
	volume := func(name string) {
		t.Helper()
		f := m.writeFile(t, name+".yaml", strings.Replace(classless, "name: classless-pv", "name: "+name, 1))
		expectOK(t, m.kubectl(t, v, "apply", "-f", f), "persistentvolume/"+name+" created")
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{name}, map[string]string{"STATUS": "Available", "STORAGECLASS": ""})
	}

	t.Run("empty-binds-classless", func(t *testing.T) {
		volume("classless-pv")
		expectOK(t, m.kubectl(t, v, "apply", "-n", "classes", "-f", testdata("binding/empty-class-claim.yaml")), "persistentvolumeclaim/empty-class-claim created")
		waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "classes"}, []string{"empty-class-claim"}, map[string]string{
			"STATUS": "Bound", "VOLUME": "classless-pv", "CAPACITY": "5Gi", "STORAGECLASS": "",
		})
		var pvc corev1.PersistentVolumeClaim
		m.getJSON(t, v, &pvc, "pvc", "empty-class-claim", "-n", "classes")
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" {
			t.Errorf("storageClassName \"\" must stay \"\", got %v", pvc.Spec.StorageClassName)
		}
	})

	t.Run("unset-without-default-binds-classless", func(t *testing.T) {
		volume("classless-pv-2")
		f := m.writeFile(t, "unset-1.yaml", strings.Replace(unset, "name: unset-class-claim", "name: unset-no-default", 1))
		expectOK(t, m.kubectl(t, v, "apply", "-n", "classes", "-f", f), "persistentvolumeclaim/unset-no-default created")
		waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "classes"}, []string{"unset-no-default"}, map[string]string{
			"STATUS": "Bound", "VOLUME": "classless-pv-2", "STORAGECLASS": "",
		})
		var pvc corev1.PersistentVolumeClaim
		m.getJSON(t, v, &pvc, "pvc", "unset-no-default", "-n", "classes")
		if pvc.Spec.StorageClassName != nil {
			t.Errorf("with no default class, an unset storageClassName stays unset, got %q", *pvc.Spec.StorageClassName)
		}
	})

	t.Run("unset-with-default-gets-default-class", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("seed000-standard.yaml")), "storageclass.storage.k8s.io/standard created")
		expectOK(t, m.kubectl(t, v, "annotate", "sc", "standard", "storageclass.kubernetes.io/is-default-class=true"), "storageclass.storage.k8s.io/standard annotated")
		volume("classless-pv-3")
		expectOK(t, m.kubectl(t, v, "apply", "-n", "classes", "-f", testdata("binding/unset-class-claim.yaml")), "persistentvolumeclaim/unset-class-claim created")
		var pvc corev1.PersistentVolumeClaim
		m.getJSON(t, v, &pvc, "pvc", "unset-class-claim", "-n", "classes")
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "standard" {
			t.Errorf("DefaultStorageClass admission: an unset storageClassName becomes the default class \"standard\", got %v", pvc.Spec.StorageClassName)
		}
		// wait until the controller has looked at the claim (it says
		// something about it), then it must still be Pending
		var events string
		if !eventually(bindTimeout, func() bool {
			events = m.mustKubectl(t, v, "get", "events", "-n", "classes", "--field-selector", "involvedObject.name=unset-class-claim")
			return strings.Contains(events, "persistentvolumeclaim/unset-class-claim")
		}) {
			t.Errorf("no event from the PV controller about unset-class-claim within %v\n%s", bindTimeout, events)
		}
		time.Sleep(time.Second)
		r := m.kubectl(t, v, "get", "pvc", "-n", "classes")
		checkCol(t, r, "STATUS", "Pending", "unset-class-claim")
		checkCol(t, r, "VOLUME", "", "unset-class-claim")
		checkCol(t, r, "STORAGECLASS", "standard", "unset-class-claim")
		r = m.kubectl(t, v, "get", "pv")
		checkCol(t, r, "STATUS", "Available", "classless-pv-3")
		checkCol(t, r, "CLAIM", "", "classless-pv-3")
		// Upstream (1.33): kubernetes.io/aws-ebs is CSI-migrated, so the
		// PV controller hands the claim to the external provisioner
		// ebs.csi.aws.com and says so (the in-tree plugin is gone).
		expectDescribeEventually(t, m, v, 5*time.Second, []string{"pvc", "unset-class-claim", "-n", "classes"},
			`(?m)^StorageClass:\s+standard$`, `(?m)^Status:\s+Pending$`,
			`(?m)^\s+volume.kubernetes.io/storage-provisioner: ebs.csi.aws.com$`,
			`(?m)^\s+Normal\s+ExternalProvisioning\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta("Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."))
	})
}

// TestBindingReclaim: delete a bound claim and the volume's reclaim policy
// runs: Retain keeps it (Released, claimRef and data kept); Recycle scrubs the
// directory and makes the volume Available (a local volume has no recycler:
// Failed); Delete removes a hostPath under /tmp and the volume; Delete
// elsewhere fails with the hostPath deleter's message.
func TestBindingReclaim(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "reclaim")
	base, err := os.MkdirTemp("/tmp", "moorage-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })

	// setup makes a directory with files in it, a hostPath volume on it
	// (a local one for names ending in -local) with the policy, a claim
	// bound to it, and deletes the claim.
	setup := func(t *testing.T, name, policy, dir string) (claim, pv string) {
		t.Helper()
		pv, claim = "reclaim-"+name, "claim-"+name
		fillDir(t, dir)
		source := "  hostPath:\n    path: " + dir + "\n"
		if strings.HasSuffix(name, "-local") {
			source = "  local:\n    path: " + dir + "\n" + `  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/hostname
          operator: In
          values:
          - node-1
`
		}
		f := m.writeFile(t, pv+".yaml", fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: %s
spec:
  capacity:
    storage: 1Gi
  accessModes:
    - ReadWriteOnce
  persistentVolumeReclaimPolicy: %s
  storageClassName: %s
%s`, pv, policy, pv, source))
		r := m.kubectl(t, v, "apply", "-f", f)
		expectOK(t, r, "persistentvolume/"+pv+" created")
		if policy == "Recycle" {
			if !strings.Contains(r.Stderr, warnRecycle) {
				t.Errorf("apply of a Recycle volume: kubectl prints upstream's warning %q\n%s", warnRecycle, r)
			}
		} else if strings.Contains(r.Stderr, "Warning") {
			t.Errorf("apply of a %s volume: no warning expected\n%s", policy, r)
		}
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{"STATUS": "Available", "RECLAIM POLICY": policy})
		f = m.writeFile(t, claim+".yaml", fmt.Sprintf(`kind: PersistentVolumeClaim
apiVersion: v1
metadata:
  name: %s
spec:
  storageClassName: %s
  accessModes:
    - ReadWriteOnce
  resources:
    requests:
      storage: 1Gi
`, claim, pv))
		expectOK(t, m.kubectl(t, v, "apply", "-n", "reclaim", "-f", f), "persistentvolumeclaim/"+claim+" created")
		waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "reclaim"}, []string{claim}, map[string]string{"STATUS": "Bound", "VOLUME": pv})
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{"STATUS": "Bound", "CLAIM": "reclaim/" + claim})
		expectOK(t, m.kubectl(t, v, "delete", "pvc", claim, "-n", "reclaim"), `persistentvolumeclaim "`+claim+`" deleted`)
		return claim, pv
	}

	t.Run("Retain", func(t *testing.T) {
		dir := filepath.Join(base, "retain")
		claim, pv := setup(t, "retain", "Retain", dir)
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{
			"RECLAIM POLICY": "Retain", "STATUS": "Released", "CLAIM": "reclaim/" + claim, "REASON": "",
		})
		time.Sleep(time.Second) // nothing else happens to it
		checkCol(t, m.kubectl(t, v, "get", "pv"), "STATUS", "Released", pv)
		expectDescribe(t, m, v, []string{"pv", pv}, `(?m)^Status:\s+Released$`, `(?m)^Claim:\s+reclaim/`+claim+`$`, `(?m)^Reclaim Policy:\s+Retain$`)
		checkFilled(t, dir)
	})

	t.Run("Recycle", func(t *testing.T) {
		dir := filepath.Join(base, "recycle")
		_, pv := setup(t, "recycle", "Recycle", dir)
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{
			"RECLAIM POLICY": "Recycle", "STATUS": "Available", "CLAIM": "", "REASON": "",
		})
		entries, err := os.ReadDir(dir)
		switch {
		case err != nil:
			t.Errorf("the recycled directory %s must stay (emptied): %v", dir, err)
		case len(entries) != 0:
			t.Errorf("the recycled directory %s must be empty, has %d entries", dir, len(entries))
		}
		expectDescribeEventually(t, m, v, 5*time.Second, []string{"pv", pv}, `(?m)^Status:\s+Available$`, `(?m)^Claim:\s*$`,
			`(?m)^Annotations:\s+<none>$`,
			`(?m)^\s+Normal\s+VolumeRecycled\s+.*\s+persistentvolume-controller\s+Volume recycled$`)
	})

	// Upstream's local volume plugin has no recycler (only hostPath and NFS
	// have one) and fails the volume; moorage, by design, scrubs local
	// volumes too, as hostPath: the directory is emptied, the volume is
	// Available again.
	t.Run("Recycle-local", func(t *testing.T) {
		dir := filepath.Join(base, "recycle-local")
		_, pv := setup(t, "recycle-local", "Recycle", dir)
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{
			"RECLAIM POLICY": "Recycle", "STATUS": "Available", "CLAIM": "", "REASON": "",
		})
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
			t.Errorf("the recycled local directory %s must stay, emptied: %v, %d entries", dir, err, len(entries))
		}
	})

	t.Run("Delete-under-tmp", func(t *testing.T) {
		dir := filepath.Join(base, "delete")
		_, pv := setup(t, "delete", "Delete", dir)
		var r result
		if !eventually(bindTimeout, func() bool {
			r = m.kubectl(t, v, "get", "pv", pv)
			return r.Code != 0 && strings.Contains(r.Stderr, "(NotFound)")
		}) {
			t.Errorf("a Released hostPath volume under /tmp with policy Delete is deleted\n%s", r)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the deleted volume's directory %s must be gone: %v", dir, err)
		}
	})

	t.Run("Delete-outside-tmp", func(t *testing.T) {
		// not under /tmp/ anywhere in the path (upstream's regexp is
		// unanchored: /var/tmp/x would match)
		top, err := os.MkdirTemp("/srv", "moorage-e2e-")
		if err != nil {
			t.Skipf("no directory outside /tmp to use: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(top) })
		dir := filepath.Join(top, "data")
		claim, pv := setup(t, "delete-outside", "Delete", dir)
		msg := "host_path deleter only supports /tmp/.+ but received provided " + dir
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{pv}, map[string]string{
			"RECLAIM POLICY": "Delete", "STATUS": "Failed", "CLAIM": "reclaim/" + claim,
			// upstream sets status.message, not status.reason: the
			// column stays empty and describe shows the message
			"REASON": "",
		})
		expectDescribeEventually(t, m, v, 5*time.Second, []string{"pv", pv}, `(?m)^Status:\s+Failed$`,
			`(?m)^Message:\s+`+regexp.QuoteMeta(msg)+`$`,
			`(?m)^\s+Warning\s+VolumeFailedDelete\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta(msg)+`$`)
		var got corev1.PersistentVolume
		m.getJSON(t, v, &got, "pv", pv)
		if got.Status.Message != msg || got.Status.Reason != "" {
			t.Errorf("status.message = %q, status.reason = %q; want %q and \"\"", got.Status.Message, got.Status.Reason, msg)
		}
		checkFilled(t, dir)
	})
}

// TestBindingInUseProtection: a claim used by a pod that is on a node keeps
// kubernetes.io/pvc-protection when deleted (Terminating) until the pod goes.
func TestBindingInUseProtection(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("seed001-task-pv-volume.yaml"), "-f", testdata("seed001-task-pv-claim.yaml")),
		"persistentvolume/task-pv-volume created", "persistentvolumeclaim/task-pv-claim created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{"task-pv-claim"}, map[string]string{"STATUS": "Bound", "VOLUME": "task-pv-volume"})
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("binding/task-pv-pod.yaml")), "pod/task-pv-pod created")

	expectOK(t, m.kubectl(t, v, "delete", "pvc", "task-pv-claim", "--wait=false"), `persistentvolumeclaim "task-pv-claim" deleted`)
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{"task-pv-claim"}, map[string]string{"STATUS": "Terminating", "VOLUME": "task-pv-volume"})
	time.Sleep(2 * time.Second) // it stays
	checkCol(t, m.kubectl(t, v, "get", "pvc"), "STATUS", "Terminating", "task-pv-claim")
	expectDescribe(t, m, v, []string{"pvc", "task-pv-claim"}, `(?m)^Status:\s+Terminating \(lasts .+\)$`,
		`(?m)^Finalizers:\s+\[kubernetes.io/pvc-protection\]$`, `(?m)^Used By:\s+task-pv-pod$`)
	checkCol(t, m.kubectl(t, v, "get", "pv"), "STATUS", "Bound", "task-pv-volume")

	// no node agent deletes the pod gracefully: force it, as one must
	// upstream when the node is gone
	r := m.kubectl(t, v, "delete", "pod", "task-pv-pod", "--grace-period=0", "--force")
	expectOK(t, r, `pod "task-pv-pod" force deleted`)
	if !strings.Contains(r.Stderr, "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated.") {
		t.Errorf("kubectl warns about --force\n%s", r)
	}
	if r := m.kubectl(t, v, "wait", "--for=delete", "pvc/task-pv-claim", "--timeout=30s"); r.Code != 0 {
		t.Errorf("the claim goes once no pod uses it\n%s", r)
	}
	waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"task-pv-volume"}, map[string]string{
		"STATUS": "Released", "CLAIM": "default/task-pv-claim", "RECLAIM POLICY": "Retain",
	})
}

// TestBindingPendingExplain: a claim nothing fits is Pending, describe shows
// upstream's FailedBinding event, and `moorage explain` lists each volume
// with the rule that rejects it.
func TestBindingPendingExplain(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "pending")
	expectOK(t, m.kubectl(t, v, "apply", "-n", "pending", "-f", testdata("binding/pending.yaml")),
		"persistentvolume/too-small created", "persistentvolume/other-class created", "persistentvolume/read-only-many created",
		"persistentvolumeclaim/lonely-claim created")
	r := waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "pending"}, []string{"lonely-claim"}, map[string]string{
		"STATUS": "Pending", "VOLUME": "", "CAPACITY": "", "ACCESS MODES": "", "STORAGECLASS": "",
	})
	expectHeader(t, r, pvcColumns...)
	expectDescribeEventually(t, m, v, bindTimeout, []string{"pvc", "lonely-claim", "-n", "pending"},
		`(?m)^StorageClass:\s*$`, `(?m)^Status:\s+Pending$`, `(?m)^Volume:\s*$`, `(?m)^Capacity:\s*$`,
		`(?m)^Events:\n\s+Type\s+Reason\s+Age\s+From\s+Message$`,
		`(?m)^\s+Normal\s+FailedBinding\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta(msgNoClass))
	for _, name := range []string{"too-small", "other-class", "read-only-many"} {
		checkCol(t, m.kubectl(t, v, "get", "pv"), "STATUS", "Available", name)
	}

	out := moorageExplain(t, m, "pvc/lonely-claim", "-n", "pending")
	expectLines(t, out,
		`(?m)^PersistentVolumeClaim pending/lonely-claim is Pending\.$`,
		`(?m)^\s+wants: 50Gi, ReadWriteOnce, volumeMode Filesystem, storage class ""`,
		`(?m)^3 volumes considered:$`,
		`(?m)^\s+VOLUME\s+VERDICT\s+WHY$`,
		`(?m)^\s+too-small\s+rejected \(capacity\)\s+\S`,
		`(?m)^\s+other-class\s+rejected \(class\)\s+\S`,
		`(?m)^\s+read-only-many\s+rejected \(accessModes\)\s+\S`,
		`(?m)^Events:$`,
		`(?m)^\s+Normal\s+FailedBinding: `+regexp.QuoteMeta(msgNoClass))
	// with no namespace flag it reads the kubeconfig's (default): not found
	cmd := exec.Command(moorageBin, "explain", "pvc/lonely-claim", "--kubeconfig", m.Kubeconfig)
	cmd.Env = m.kubectlEnv(defaultVersion)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), `persistentvolumeclaims "lonely-claim" not found`) {
		t.Errorf("moorage explain of a claim not in the namespace: want an error naming it, got %v\n%s", err, b)
	}
}

// TestBindingPreBound: a claim that names a volume of another class gets
// upstream's VolumeMismatch event and stays Pending; a volume reserved for a
// claim by spec.claimRef binds to it even when a smaller one fits.
func TestBindingPreBound(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "prebound")
	expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("binding/prebound.yaml")),
		"persistentvolume/gold-pv created", "persistentvolume/reserved-pv created", "persistentvolume/small-pv created")
	for _, name := range []string{"gold-pv", "reserved-pv", "small-pv"} {
		waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{name}, map[string]string{"STATUS": "Available"})
	}
	// a volume reserved for a claim shows the claim before it exists
	checkCol(t, m.kubectl(t, v, "get", "pv"), "CLAIM", "prebound/reserved-claim", "reserved-pv")

	t.Run("claim-names-volume-of-another-class", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("binding/wrong-class-claim.yaml")), "persistentvolumeclaim/wrong-class-claim created")
		expectDescribeEventually(t, m, v, bindTimeout, []string{"pvc", "wrong-class-claim", "-n", "prebound"},
			`(?m)^StorageClass:\s+manual$`, `(?m)^Status:\s+Pending$`, `(?m)^Volume:\s+gold-pv$`,
			`(?m)^\s+Warning\s+VolumeMismatch\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta(`Cannot bind to requested volume "gold-pv": storageClassName does not match`)+`$`)
		checkCol(t, m.kubectl(t, v, "get", "pvc", "-n", "prebound"), "STATUS", "Pending", "wrong-class-claim")
		r := m.kubectl(t, v, "get", "pv")
		checkCol(t, r, "STATUS", "Available", "gold-pv")
		checkCol(t, r, "CLAIM", "", "gold-pv")
	})

	t.Run("volume-reserved-by-claimRef", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("binding/reserved-claim.yaml")), "persistentvolumeclaim/reserved-claim created")
		waitCells(t, m, v, bindTimeout, []string{"get", "pvc", "-n", "prebound"}, []string{"reserved-claim"}, map[string]string{
			"STATUS": "Bound", "VOLUME": "reserved-pv", "CAPACITY": "20Gi", "STORAGECLASS": "manual",
		})
		r := waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"reserved-pv"}, map[string]string{"STATUS": "Bound", "CLAIM": "prebound/reserved-claim"})
		checkCol(t, r, "STATUS", "Available", "small-pv")
		var pv corev1.PersistentVolume
		var pvc corev1.PersistentVolumeClaim
		m.getJSON(t, v, &pv, "pv", "reserved-pv")
		m.getJSON(t, v, &pvc, "pvc", "reserved-claim", "-n", "prebound")
		checkBoundPair(t, &pv, &pvc)
		// the user bound the volume: the controller does not claim it did;
		// the claim's side it did bind
		if _, ok := pv.Annotations["pv.kubernetes.io/bound-by-controller"]; ok {
			t.Errorf("a volume pre-bound by the user gets no pv.kubernetes.io/bound-by-controller annotation: %v", pv.Annotations)
		}
		if pvc.Annotations["pv.kubernetes.io/bound-by-controller"] != "yes" || pvc.Annotations["pv.kubernetes.io/bind-completed"] != "yes" {
			t.Errorf("the claim gets bind-completed and bound-by-controller: %v", pvc.Annotations)
		}
		expectDescribe(t, m, v, []string{"pv", "reserved-pv"}, `(?m)^Annotations:\s+<none>$`, `(?m)^Status:\s+Bound$`, `(?m)^Claim:\s+prebound/reserved-claim$`)
	})
}

// ---------------------------------------------------------------- helpers

// waitCells runs `kubectl <args>` until the row led by lead has every column
// value in want; it reports the differences if that does not happen within
// timeout, and returns the last run.
func waitCells(t testing.TB, m *moorage, v int, timeout time.Duration, args, lead []string, want map[string]string) result {
	t.Helper()
	var r result
	var diffs []string
	ok := eventually(timeout, func() bool {
		r = m.kubectl(t, v, args...)
		diffs = diffs[:0]
		if r.Code != 0 {
			diffs = append(diffs, "kubectl failed")
			return false
		}
		cols := make([]string, 0, len(want))
		for c := range want {
			cols = append(cols, c)
		}
		sort.Strings(cols)
		for _, c := range cols {
			got, found := columnValue(r.Stdout, c, lead...)
			switch {
			case !found:
				diffs = append(diffs, fmt.Sprintf("no row %v or no column %s", lead, c))
			case got != want[c]:
				diffs = append(diffs, fmt.Sprintf("%s = %q, want %q", c, got, want[c]))
			}
		}
		return len(diffs) == 0
	})
	if !ok {
		t.Errorf("kubectl 1.%d: row %v after %v: %s\n%s", v, lead, timeout, strings.Join(diffs, "; "), r)
	}
	return r
}

// expectDescribe runs `kubectl describe <args>` once and checks patterns.
func expectDescribe(t testing.TB, m *moorage, v int, args []string, patterns ...string) {
	t.Helper()
	expectDescribeEventually(t, m, v, 0, args, patterns...)
}

// expectDescribeEventually retries `kubectl describe <args>` until every
// pattern matches (events arrive asynchronously).
func expectDescribeEventually(t testing.TB, m *moorage, v int, timeout time.Duration, args []string, patterns ...string) {
	t.Helper()
	var r result
	var missing []string
	eventually(timeout, func() bool {
		r = m.kubectl(t, v, append([]string{"describe"}, args...)...)
		missing = missing[:0]
		for _, p := range patterns {
			if r.Code != 0 || !regexp.MustCompile(p).MatchString(r.Stdout) {
				missing = append(missing, p)
			}
		}
		return len(missing) == 0
	})
	for _, p := range missing {
		t.Errorf("kubectl 1.%d describe %s lacks /%s/", v, strings.Join(args, " "), p)
	}
	if len(missing) > 0 {
		t.Logf("%s", r)
	}
}

// expectLines checks that out matches every pattern.
func expectLines(t testing.TB, out string, patterns ...string) {
	t.Helper()
	bad := false
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("output lacks /%s/", p)
			bad = true
		}
	}
	if bad {
		t.Logf("output:\n%s", out)
	}
}

// moorageExplain runs `moorage explain <args> --kubeconfig <this server's>`.
func moorageExplain(t testing.TB, m *moorage, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, moorageBin, append(append([]string{"explain"}, args...), "--kubeconfig", m.Kubeconfig)...)
	cmd.Env = m.kubectlEnv(defaultVersion)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("moorage explain %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if testing.Verbose() {
		t.Logf("$ moorage explain %s\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

// checkBoundPair checks upstream's bi-directional binding: the volume's
// claimRef names the claim with its uid, the claim names the volume, both are
// Bound and the claim's status carries the volume's capacity and modes.
func checkBoundPair(t testing.TB, pv *corev1.PersistentVolume, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	ref := pv.Spec.ClaimRef
	switch {
	case ref == nil:
		t.Errorf("volume %s has no claimRef", pv.Name)
	case ref.Kind != "PersistentVolumeClaim" || ref.APIVersion != "v1" || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name || ref.UID != pvc.UID:
		t.Errorf("volume %s claimRef = %+v, want PersistentVolumeClaim v1 %s/%s uid %s", pv.Name, *ref, pvc.Namespace, pvc.Name, pvc.UID)
	}
	if pvc.Spec.VolumeName != pv.Name {
		t.Errorf("claim %s/%s spec.volumeName = %q, want %q", pvc.Namespace, pvc.Name, pvc.Spec.VolumeName, pv.Name)
	}
	if pv.Status.Phase != corev1.VolumeBound || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("phases: volume %s, claim %s; want Bound, Bound", pv.Status.Phase, pvc.Status.Phase)
	}
	if got, want := pvc.Status.Capacity[corev1.ResourceStorage], pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(want) != 0 {
		t.Errorf("claim status.capacity = %s, want the volume's %s", got.String(), want.String())
	}
	if fmt.Sprint(pvc.Status.AccessModes) != fmt.Sprint(pv.Spec.AccessModes) {
		t.Errorf("claim status.accessModes = %v, want the volume's %v", pvc.Status.AccessModes, pv.Spec.AccessModes)
	}
	if b, err := json.Marshal(pvc.Status); err == nil && testing.Verbose() {
		t.Logf("claim status: %s", b)
	}
}

// fillDir makes dir with a file and a subdirectory with a file.
func fillDir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"data.txt", "sub/more.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("keep "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFilled checks that fillDir's files are still there.
func checkFilled(t testing.TB, dir string) {
	t.Helper()
	for _, f := range []string{"data.txt", "sub/more.txt"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != "keep "+f {
			t.Errorf("%s must be kept: %q, %v", filepath.Join(dir, f), b, err)
		}
	}
}
