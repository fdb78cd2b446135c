package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// TestKubectlMatrix runs the seeds' manifests through every kubectl version,
// each against its own moorage (the versions run in parallel). It checks
// what kubectl prints of the objects as written, so the workload
// controllers are left out (--controllers): their pods and claims are
// tested in statefulset_test.go.
func TestKubectlMatrix(t *testing.T) {
	requireE2E(t)
	for _, v := range kubectlVersions {
		v := v
		t.Run(fmt.Sprintf("kubectl-1.%d", v), func(t *testing.T) {
			t.Parallel()
			kubectlPath(t, v) // fail early, and clearly, if the binary is missing
			m := startMoorageWith(t, t.TempDir(), "--controllers=*,-statefulset-controller,-daemonset-controller,-replicaset-controller,-replicationcontroller-controller,-deployment-controller")
			runMatrix(t, m, v)
		})
	}
}

// runMatrix is the whole kubectl session of one version. Steps build on each
// other (apply first, then read, then change), so they share one server.
func runMatrix(t *testing.T, m *moorage, v int) {
	step := func(name string, f func(t *testing.T)) { t.Run(name, f) }

	// Without discovery nothing else can work: stop here with one clear
	// failure instead of a hundred identical ones.
	step("discovery", func(t *testing.T) {
		r := m.kubectl(t, v, "get", "namespaces")
		if r.Code != 0 {
			t.Fatalf("kubectl 1.%d cannot list namespaces, so every other step of this version would fail the same way:\n%s", v, r)
		}
		for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			if row(r.Stdout, ns, "Active") == "" {
				t.Errorf("namespace %s is not listed as Active\n%s", ns, r)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// The namespace deletion runs across the whole session: the namespace
	// controller has all of it to empty and remove the namespace.
	doomed := "e2e-doomed"
	step("delete-namespace/start", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "create", "namespace", doomed), "namespace/"+doomed+" created")
		expectOK(t, m.kubectl(t, v, "create", "configmap", "content", "-n", doomed, "--from-literal=k=v"), "configmap/content created")
		expectOK(t, m.kubectl(t, v, "delete", "namespace", doomed, "--wait=false"), `namespace "`+doomed+`" deleted`)
		var ns corev1.Namespace
		r := m.kubectl(t, v, "get", "namespace", doomed, "-o", "json")
		if r.Code != 0 {
			t.Errorf("right after delete, namespace %s (which still holds a ConfigMap) should be there, Terminating, until the namespace controller has deleted its content; it is gone at once\n%s", doomed, r)
		} else {
			if err := json.Unmarshal([]byte(r.Stdout), &ns); err != nil {
				t.Fatal(err)
			}
			if ns.Status.Phase != corev1.NamespaceTerminating || ns.DeletionTimestamp == nil {
				t.Errorf("right after delete, namespace %s should be Terminating with a deletionTimestamp, got phase %q, deletionTimestamp %v", doomed, ns.Status.Phase, ns.DeletionTimestamp)
			}
			r = m.kubectl(t, v, "get", "namespace", doomed)
			if row(r.Stdout, doomed, "Terminating") == "" {
				t.Errorf("get namespace should show STATUS Terminating\n%s", r)
			}
		}
		// Creating in a terminating namespace is forbidden (checked while it
		// is still there).
		if ns.DeletionTimestamp != nil {
			f := m.writeFile(t, "late.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n  namespace: "+doomed+"\ndata:\n  k: v\n")
			r = m.kubectl(t, v, "create", "-f", f)
			if r.Code == 0 {
				t.Errorf("creating in a terminating namespace should fail\n%s", r)
			} else if !strings.Contains(r.Stderr, `(Forbidden)`) || !strings.Contains(r.Stderr, `configmaps "late" is forbidden: unable to create new content in namespace `+doomed+` because it is being terminated`) {
				if !strings.Contains(r.Stderr, "(NotFound)") { // gone meanwhile: fine
					t.Errorf("want Forbidden: unable to create new content in namespace %s because it is being terminated\n%s", doomed, r)
				}
			}
		}
	})

	step("version", func(t *testing.T) {
		var ver struct {
			ClientVersion struct{ Major, Minor, GitVersion string }
			ServerVersion struct{ Major, Minor, GitVersion string }
		}
		out := m.mustKubectl(t, v, "version", "-o", "json")
		if err := json.Unmarshal([]byte(out), &ver); err != nil {
			t.Fatalf("version -o json: %v\n%s", err, out)
		}
		if ver.ClientVersion.Minor != fmt.Sprint(v) {
			t.Errorf("client minor %q, want %d", ver.ClientVersion.Minor, v)
		}
		if ver.ServerVersion.Major != "1" || ver.ServerVersion.Minor != "33" || !strings.HasPrefix(ver.ServerVersion.GitVersion, "v1.33.") {
			t.Errorf("server version %+v, want 1.33 (v1.33.*)", ver.ServerVersion)
		}
		if v == 27 { // 1.27 still prints the version.Info structs by default
			expectOK(t, m.kubectl(t, v, "version"), `Client Version: version.Info{Major:"1", Minor:"27"`, `Server Version: version.Info{Major:"1", Minor:"33", GitVersion:"v1.33.`)
		} else {
			expectOK(t, m.kubectl(t, v, "version"), "Client Version: v1."+fmt.Sprint(v), "Server Version: v1.33.")
		}
	})

	step("get-raw", func(t *testing.T) {
		for _, p := range []string{"/readyz", "/livez", "/healthz"} {
			r := m.kubectl(t, v, "get", "--raw", p)
			if r.Code != 0 || strings.TrimSpace(r.Stdout) != "ok" {
				t.Errorf("get --raw %s should print ok\n%s", p, r)
			}
		}
		expectOK(t, m.kubectl(t, v, "get", "--raw", "/readyz?verbose"), "[+]ping ok", "readyz check passed")
		var vi map[string]any
		if err := json.Unmarshal([]byte(m.mustKubectl(t, v, "get", "--raw", "/version")), &vi); err != nil || vi["minor"] != "33" {
			t.Errorf("/version: %v %v", vi, err)
		}
	})

	step("create-namespace", func(t *testing.T) {
		for _, ns := range seedNamespaces {
			expectOK(t, m.kubectl(t, v, "create", "namespace", ns), "namespace/"+ns+" created")
		}
		var ns corev1.Namespace
		m.getJSON(t, v, &ns, "namespace", "seed000")
		if ns.Status.Phase != corev1.NamespaceActive || ns.Labels["kubernetes.io/metadata.name"] != "seed000" {
			t.Errorf("namespace seed000: phase %q labels %v, want Active and kubernetes.io/metadata.name=seed000", ns.Status.Phase, ns.Labels)
		}
		if len(ns.Spec.Finalizers) != 1 || ns.Spec.Finalizers[0] != corev1.FinalizerKubernetes {
			t.Errorf("namespace seed000 spec.finalizers = %v, want [kubernetes]", ns.Spec.Finalizers)
		}
		expectFail(t, m.kubectl(t, v, "create", "namespace", "seed000"), `Error from server (AlreadyExists): namespaces "seed000" already exists`)
	})

	applied := true
	step("apply/create", func(t *testing.T) {
		for _, g := range applyGroups() {
			r := m.kubectl(t, v, append([]string{"apply"}, groupArgs(g)...)...)
			if r.Code != 0 {
				applied = false
			}
			var wantOut, wantWarn []string
			for _, o := range g {
				wantOut = append(wantOut, o.Ref()+" created")
				wantWarn = append(wantWarn, o.ApplyWarnings...)
			}
			expectOK(t, r, wantOut...)
			for _, w := range wantWarn {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("upstream warns on this create: stderr lacks %q\n%s", w, r)
				}
			}
		}
	})
	if !applied {
		t.FailNow() // every later step reads these objects
	}

	step("apply/reapply-unchanged", func(t *testing.T) {
		for _, g := range applyGroups() {
			r := m.kubectl(t, v, append([]string{"apply"}, groupArgs(g)...)...)
			var want []string
			for _, o := range g {
				if o.Reconfigured {
					want = append(want, o.Ref()+" configured")
				} else {
					want = append(want, o.Ref()+" unchanged")
				}
			}
			expectOK(t, r, want...)
		}
	})

	step("apply/reapply-configured", func(t *testing.T) {
		o := seedObjects[indexOf("seed000-db-config.yaml")]
		b, err := os.ReadFile(testdata(o.File))
		if err != nil {
			t.Fatal(err)
		}
		changed := strings.Replace(string(b), "1.2.3.4,5.6.7.8", "1.2.3.4,5.6.7.8,9.9.9.9", 1)
		f := m.writeFile(t, "db-config-changed.yaml", changed)
		expectOK(t, m.kubectl(t, v, "apply", "-f", f), "configmap/db-config configured")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "configmap", "db-config", "-n", "default")
		if cm.Data["db-ip-addresses"] != "1.2.3.4,5.6.7.8,9.9.9.9" {
			t.Errorf("db-config data after apply: %v", cm.Data)
		}
		expectOK(t, m.kubectl(t, v, "apply", "-f", testdata(o.File)), "configmap/db-config configured")
	})

	step("create/already-exists", func(t *testing.T) {
		for _, g := range applyGroups() {
			r := m.kubectl(t, v, append([]string{"create"}, groupArgs(g)...)...)
			var want []string
			for _, o := range g {
				plural := map[string]string{pvResource: "persistentvolumes", pvcResource: "persistentvolumeclaims", scResource: "storageclasses.storage.k8s.io",
					stsResource: "statefulsets.apps", svcResource: "services", cmResource: "configmaps", secResource: "secrets"}[o.Resource]
				want = append(want, fmt.Sprintf(`Error from server (AlreadyExists): error when creating %q: %s %q already exists`, testdata(o.File), plural, o.Name))
			}
			expectFail(t, r, want...)
		}
	})

	step("get/tables", func(t *testing.T) {
		pvCols := []string{"NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"}
		r := m.kubectl(t, v, "get", "pv")
		expectHeader(t, r, pvCols...)
		for _, o := range seedObjects {
			if o.Resource == pvResource && row(r.Stdout, o.Name) == "" {
				t.Errorf("get pv: no row for %s\n%s", o.Name, r)
			}
		}
		checkCol(t, r, "CAPACITY", "100Gi", "pv-1")
		checkCol(t, r, "ACCESS MODES", "RWO,ROX", "pv-1")
		checkCol(t, r, "RECLAIM POLICY", "Recycle", "pv-1")
		checkCol(t, r, "STORAGECLASS", "normal", "pv-1")
		checkCol(t, r, "VOLUMEATTRIBUTESCLASS", "<unset>", "pv-1")
		checkCol(t, r, "RECLAIM POLICY", "Retain", "task-pv-volume")
		checkCol(t, r, "CAPACITY", "10Gi", "block-pv")
		expectHeader(t, m.kubectl(t, v, "get", "pv", "-o", "wide"), append(pvCols, "VOLUMEMODE")...)
		checkCol(t, m.kubectl(t, v, "get", "pv", "-o", "wide"), "VOLUMEMODE", "Block", "block-pv")

		pvcCols := []string{"NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"}
		r = m.kubectl(t, v, "get", "pvc", "-n", "seed000")
		expectHeader(t, r, pvcCols...)
		checkCol(t, r, "STATUS", "Bound", "storage-claim") // to pv-1: its labels pass the selector
		checkCol(t, r, "VOLUME", "pv-1", "storage-claim")
		checkCol(t, r, "STORAGECLASS", "normal", "storage-claim")
		checkCol(t, r, "STORAGECLASS", "aws-efs", "efs") // from the beta annotation, as upstream
		r = m.kubectl(t, v, "get", "pvc", "-n", "seed000", "-o", "wide")
		expectHeader(t, r, append(pvcCols, "VOLUMEMODE")...)
		checkCol(t, r, "VOLUMEMODE", "Block", "block-pvc")
		checkCol(t, r, "VOLUMEMODE", "Filesystem", "efs")

		r = m.kubectl(t, v, "get", "sc")
		expectHeader(t, r, "NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE")
		checkCol(t, r, "PROVISIONER", "kubernetes.io/aws-ebs", "standard")
		checkCol(t, r, "RECLAIMPOLICY", "Delete", "standard")
		checkCol(t, r, "VOLUMEBINDINGMODE", "Immediate", "standard")
		checkCol(t, r, "ALLOWVOLUMEEXPANSION", "false", "standard")
		checkCol(t, r, "VOLUMEBINDINGMODE", "WaitForFirstConsumer", "local-storage")

		r = m.kubectl(t, v, "get", "sts", "-n", "seed000")
		expectHeader(t, r, "NAME", "READY", "AGE")
		checkCol(t, r, "READY", "0/3", "web")
		r = m.kubectl(t, v, "get", "sts", "-n", "seed001", "-o", "wide")
		expectHeader(t, r, "NAME", "READY", "AGE", "CONTAINERS", "IMAGES")
		checkCol(t, r, "CONTAINERS", "mysql,xtrabackup", "mysql")
		checkCol(t, r, "IMAGES", "mysql:5.7,zhangmingkai4315/google-samples-xtrabackup:latest", "mysql")

		r = m.kubectl(t, v, "get", "svc", "-n", "seed001")
		expectHeader(t, r, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE")
		checkCol(t, r, "CLUSTER-IP", "None", "mysql")
		checkCol(t, r, "PORT(S)", "3306/TCP", "mysql")
		if ip, _ := columnValue(r.Stdout, "CLUSTER-IP", "mysql-read"); net.ParseIP(ip) == nil {
			t.Errorf("service mysql-read should have been allocated a cluster IP, CLUSTER-IP is %q\n%s", ip, r)
		}
		r = m.kubectl(t, v, "get", "svc", "-n", "seed001", "-o", "wide")
		expectHeader(t, r, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR")
		checkCol(t, r, "SELECTOR", "app=mysql", "mysql-read")

		r = m.kubectl(t, v, "get", "cm", "-n", "seed001")
		expectHeader(t, r, "NAME", "DATA", "AGE")
		checkCol(t, r, "DATA", "2", "mysql")
		r = m.kubectl(t, v, "get", "secret", "-n", "seed000")
		expectHeader(t, r, "NAME", "TYPE", "DATA", "AGE")
		checkCol(t, r, "TYPE", "kubernetes.io/rbd", "ceph-secret")
		checkCol(t, r, "DATA", "2", "azure-file-secret")

		// -o name, and several types at once
		expectOK(t, m.kubectl(t, v, "get", "pvc,sts,svc", "-n", "seed002", "-o", "name"),
			"persistentvolumeclaim/myclaim", "statefulset.apps/web", "service/nginx")
	})

	step("get/json-yaml-defaults", func(t *testing.T) { checkSeedDefaults(t, m, v) })

	step("get/all-namespaces", func(t *testing.T) {
		r := m.kubectl(t, v, "get", "pvc", "-A")
		expectHeader(t, r, "NAMESPACE", "NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE")
		for _, o := range seedObjects {
			if o.Resource == pvcResource && row(r.Stdout, o.Namespace, o.Name) == "" {
				t.Errorf("get pvc -A: no row %s %s\n%s", o.Namespace, o.Name, r)
			}
		}
		r = m.kubectl(t, v, "get", "sts", "--all-namespaces")
		expectHeader(t, r, "NAMESPACE", "NAME", "READY", "AGE")
		for _, want := range [][]string{{"seed000", "web", "0/3"}, {"seed001", "mysql", "0/3"}, {"seed002", "web", "0/2"}} {
			if row(r.Stdout, want...) == "" {
				t.Errorf("get sts -A: no row %v\n%s", want, r)
			}
		}
	})

	step("get/labels-and-selectors", func(t *testing.T) {
		r := m.kubectl(t, v, "get", "pv", "pv-1", "--show-labels")
		expectHeader(t, r, "NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE", "LABELS")
		checkCol(t, r, "LABELS", "capacity=100Gi,release=stable", "pv-1")

		r = m.kubectl(t, v, "get", "pv", "-L", "release", "-L", "type")
		expectHeader(t, r, "NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE", "RELEASE", "TYPE")
		checkCol(t, r, "RELEASE", "stable", "pv-1")
		checkCol(t, r, "TYPE", "local", "task-pv-volume")

		names := func(args ...string) []string {
			out := m.mustKubectl(t, v, append(append([]string{"get"}, args...), "-o", "name")...)
			return strings.Fields(out)
		}
		same := func(got []string, want ...string) {
			t.Helper()
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("got %v, want %v", got, want)
			}
		}
		same(names("pv", "-l", "release=stable"), "persistentvolume/pv-1")
		same(names("pv", "-l", "release in (stable,beta),capacity=100Gi"), "persistentvolume/pv-1")
		same(names("pv", "-l", "type"), "persistentvolume/task-pv-volume")
		same(names("pv", "-l", "!type,!release"), "persistentvolume/block-pv", "persistentvolume/example-pv",
			"persistentvolume/local-pv1", "persistentvolume/local-pv2", "persistentvolume/persistent-volume-1", "persistentvolume/pv0003")
		same(names("cm", "-A", "-l", "app=mysql"), "configmap/mysql")
		same(names("pv", "--field-selector", "metadata.name=pv0003"), "persistentvolume/pv0003")
		same(names("svc", "-A", "--field-selector", "metadata.name=nginx"), "service/nginx", "service/nginx")
		same(names("svc", "-A", "--field-selector", "metadata.name=nginx,metadata.namespace=seed002"), "service/nginx")
		same(names("secret", "-n", "seed000", "--field-selector", "type=kubernetes.io/rbd"), "secret/ceph-secret")
		same(names("pvc", "-n", "seed000", "--field-selector", "metadata.name!=efs", "-l", "!nothing"),
			"persistentvolumeclaim/block-pvc", "persistentvolumeclaim/persistent-volume-claim", "persistentvolumeclaim/storage-claim")
		r = m.kubectl(t, v, "get", "pv", "--field-selector", "spec.capacity=1Gi")
		expectFail(t, r, `"spec.capacity" is not a known field selector`)
		r = m.kubectl(t, v, "get", "pv", "-l", "release=nothing")
		if r.Code != 0 || strings.TrimSpace(r.Stdout) != "" || !strings.Contains(r.Stderr, "No resources found") {
			t.Errorf("an empty selection prints \"No resources found\" on stderr\n%s", r)
		}
	})

	step("get/watch", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "create", "configmap", "e2e-watch", "-n", "seed000", "--from-literal=a=1"), "configmap/e2e-watch created")
		w := m.kubectlBackground(t, v, "get", "configmap", "e2e-watch", "-n", "seed000", "--watch", "--output-watch-events")
		if _, ok := w.WaitLine(15*time.Second, func(l string) bool { return fieldsPrefix(l, "ADDED", "e2e-watch", "1") }); !ok {
			t.Fatalf("no ADDED line for the existing object\n%s", w.Output())
		}
		plain := m.kubectlBackground(t, v, "get", "configmap", "-n", "seed000", "-w")
		if _, ok := plain.WaitLine(15*time.Second, func(l string) bool { return fieldsPrefix(l, "e2e-watch", "1") }); !ok {
			t.Fatalf("get -w: no row for the existing object\n%s", plain.Output())
		}
		expectOK(t, m.kubectl(t, v, "patch", "configmap", "e2e-watch", "-n", "seed000", "-p", `{"data":{"b":"2"}}`), "configmap/e2e-watch patched")
		if _, ok := w.WaitLine(15*time.Second, func(l string) bool { return fieldsPrefix(l, "MODIFIED", "e2e-watch", "2") }); !ok {
			t.Errorf("no MODIFIED line with DATA 2 after the patch\n%s", w.Output())
		}
		if _, ok := plain.WaitLine(15*time.Second, func(l string) bool { return fieldsPrefix(l, "e2e-watch", "2") }); !ok {
			t.Errorf("get -w: no updated row with DATA 2 after the patch\n%s", plain.Output())
		}
		expectOK(t, m.kubectl(t, v, "delete", "configmap", "e2e-watch", "-n", "seed000"), `configmap "e2e-watch" deleted`)
		if _, ok := w.WaitLine(15*time.Second, func(l string) bool { return fieldsPrefix(l, "DELETED", "e2e-watch") }); !ok {
			t.Errorf("no DELETED line after the delete\n%s", w.Output())
		}
		w.Stop()
		plain.Stop()
	})

	step("describe", func(t *testing.T) {
		describe := func(args []string, patterns ...string) {
			t.Helper()
			r := m.kubectl(t, v, append([]string{"describe"}, args...)...)
			if r.Code != 0 {
				t.Errorf("describe failed\n%s", r)
				return
			}
			for _, p := range patterns {
				if !regexp.MustCompile(p).MatchString(r.Stdout) {
					t.Errorf("describe output lacks /%s/\n%s", p, r)
				}
			}
		}
		describe([]string{"pv", "pv-1"}, `(?m)^Name:\s+pv-1$`, `(?m)^Labels:\s+capacity=100Gi$`, `(?m)^\s+release=stable$`,
			`(?m)^StorageClass:\s+normal$`, `(?m)^Reclaim Policy:\s+Recycle$`,
			`(?m)^Access Modes:\s+RWO,ROX$`, `(?m)^VolumeMode:\s+Filesystem$`, `(?m)^Capacity:\s+100Gi$`,
			`(?m)^\s+Type:\s+NFS \(an NFS mount that lasts the lifetime of a pod\)$`, `(?m)^\s+Server:\s+172.17.0.8$`, `(?m)^Events:\s+<none>$`)
		describe([]string{"pv", "example-pv"}, `(?m)^Node Affinity:\s*$`, `(?m)^\s+Required Terms:\s*$`,
			`(?m)^\s+Term 0:\s+kubernetes.io/hostname in \[example-node\]$`, `(?m)^\s+Type:\s+LocalVolume`, `(?m)^\s+Path:\s+/mnt/disks/ssd1$`)
		describe([]string{"pvc", "storage-claim", "-n", "seed000"}, `(?m)^Name:\s+storage-claim$`, `(?m)^Namespace:\s+seed000$`,
			`(?m)^StorageClass:\s+normal$`, `(?m)^Status:\s+Bound$`,
			`(?m)^VolumeMode:\s+Filesystem$`, `(?m)^Used By:\s+<none>$`, `(?m)^Events:\s+<none>$`)
		describe([]string{"sts", "web", "-n", "seed000"}, `(?m)^Name:\s+web$`, `(?m)^Selector:\s+app=nginx$`,
			`(?m)^Replicas:\s+3 desired \| 0 total$`, `(?m)^Update Strategy:\s+RollingUpdate$`, `(?m)^\s+Partition:\s+0$`,
			`(?m)^Pods Status:\s+0 Running / 0 Waiting / 0 Succeeded / 0 Failed$`, `(?m)^\s+Image:\s+gcr.io/google_containers/nginx-slim:0.8$`,
			`(?m)^\s+/usr/share/nginx/html from www \(rw\)$`, `(?m)^Volume Claims:\s*$`, `(?m)^\s+Capacity:\s+1Gi$`, `(?m)^Events:\s+<none>$`)
		describe([]string{"sc", "local-storage"}, `(?m)^Name:\s+local-storage$`, `(?m)^IsDefaultClass:\s+No$`,
			`(?m)^Provisioner:\s+kubernetes.io/no-provisioner$`, `(?m)^ReclaimPolicy:\s+Delete$`, `(?m)^VolumeBindingMode:\s+WaitForFirstConsumer$`, `(?m)^Events:\s+<none>$`)
		describe([]string{"cm", "mysql", "-n", "seed001"}, `(?m)^Name:\s+mysql$`, `(?m)^Labels:\s+app=mysql$`, `(?m)^Data\n====$`,
			`(?m)^master.cnf:\n----\n# master config\n\[mysqld\]\nlog-bin\n`, `(?m)^BinaryData\n====$`, `(?m)^Events:\s+<none>$`)
		describe([]string{"ns", "seed000"}, `(?m)^Name:\s+seed000$`, `(?m)^Labels:\s+kubernetes.io/metadata.name=seed000$`,
			`(?m)^Status:\s+Active$`)
		// describe by type lists every object of it
		describe([]string{"pvc", "-n", "seed002"}, `(?m)^Name:\s+myclaim$`, `(?m)^StorageClass:\s+slow$`)
	})

	step("default-storageclass", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "annotate", "storageclass", "local-storage", "storageclass.kubernetes.io/is-default-class=true"),
			"storageclass.storage.k8s.io/local-storage annotate") // 1.27 prints "annotate"
		r := m.kubectl(t, v, "get", "sc")
		if row(r.Stdout, "local-storage", "(default)") == "" {
			t.Errorf("the default StorageClass is printed as \"local-storage (default)\"\n%s", r)
		}
		if row(r.Stdout, "standard", "kubernetes.io/aws-ebs") == "" {
			t.Errorf("other classes have no (default) marker\n%s", r)
		}
		r = m.kubectl(t, v, "describe", "sc", "local-storage")
		if !regexp.MustCompile(`(?m)^IsDefaultClass:\s+Yes$`).MatchString(r.Stdout) {
			t.Errorf("describe sc of the default class: IsDefaultClass: Yes\n%s", r)
		}
	})

	step("patch", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "create", "configmap", "e2e-patch", "-n", "seed000", "--from-literal=a=1", "--from-literal=b=2"), "configmap/e2e-patch created")
		// strategic merge (the default): maps merge
		expectOK(t, m.kubectl(t, v, "patch", "configmap", "e2e-patch", "-n", "seed000", "-p", `{"data":{"c":"3"}}`), "configmap/e2e-patch patched")
		// merge patch: null deletes
		expectOK(t, m.kubectl(t, v, "patch", "configmap", "e2e-patch", "-n", "seed000", "--type=merge", "-p", `{"data":{"a":null,"b":"two"}}`), "configmap/e2e-patch patched")
		// JSON patch
		expectOK(t, m.kubectl(t, v, "patch", "configmap", "e2e-patch", "-n", "seed000", "--type=json",
			"-p", `[{"op":"add","path":"/data/d","value":"4"},{"op":"remove","path":"/data/c"},{"op":"test","path":"/data/b","value":"two"}]`), "configmap/e2e-patch patched")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "configmap", "e2e-patch", "-n", "seed000")
		if fmt.Sprint(cm.Data) != "map[b:two d:4]" {
			t.Errorf("after the three patches data = %v, want map[b:two d:4]", cm.Data)
		}
		// A patch that changes nothing
		expectOK(t, m.kubectl(t, v, "patch", "configmap", "e2e-patch", "-n", "seed000", "-p", `{"data":{"d":"4"}}`), "configmap/e2e-patch patched (no change)")
		// A failing JSON patch test operation changes nothing
		r := m.kubectl(t, v, "patch", "configmap", "e2e-patch", "-n", "seed000", "--type=json", "-p", `[{"op":"test","path":"/data/b","value":"nope"},{"op":"add","path":"/data/e","value":"5"}]`)
		if r.Code == 0 {
			t.Errorf("a failing JSON-patch test op must fail the patch\n%s", r)
		}
		m.getJSON(t, v, &cm, "configmap", "e2e-patch", "-n", "seed000")
		if _, ok := cm.Data["e"]; ok {
			t.Errorf("a failed JSON patch was partly applied: %v", cm.Data)
		}

		// strategic merge on a StatefulSet: containers merge by name, ports survive
		expectOK(t, m.kubectl(t, v, "patch", "sts", "web", "-n", "seed000", "-p",
			`{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}`), "statefulset.apps/web patched")
		var sts appsv1.StatefulSet
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed000")
		if c := sts.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Image != "nginx:1.27" || len(c[0].Ports) != 1 || len(c[0].VolumeMounts) != 1 {
			t.Errorf("strategic merge should change only the image: containers = %+v", c)
		}
		if sts.Generation != 2 {
			t.Errorf("a spec change bumps metadata.generation to 2, got %d", sts.Generation)
		}
		// merge patch on a PVC's labels, JSON patch on a PV's spec
		expectOK(t, m.kubectl(t, v, "patch", "pvc", "storage-claim", "-n", "seed000", "--type=merge", "-p", `{"metadata":{"labels":{"tier":"gold"}}}`),
			"persistentvolumeclaim/storage-claim patched")
		expectOK(t, m.kubectl(t, v, "patch", "pv", "pv0003", "--type=json", "-p", `[{"op":"replace","path":"/spec/persistentVolumeReclaimPolicy","value":"Retain"}]`),
			"persistentvolume/pv0003 patched")
		var pv corev1.PersistentVolume
		m.getJSON(t, v, &pv, "pv", "pv0003")
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
			t.Errorf("pv0003 reclaim policy %q after the JSON patch, want Retain", pv.Spec.PersistentVolumeReclaimPolicy)
		}
		// patch -o yaml / --dry-run=server print the result without storing it
		out := m.mustKubectl(t, v, "patch", "pv", "pv0003", "--type=merge", "-p", `{"spec":{"storageClassName":"fast"}}`, "--dry-run=server", "-o", "jsonpath={.spec.storageClassName}")
		if out != "fast" {
			t.Errorf("dry-run patch printed storageClassName %q, want fast", out)
		}
		m.getJSON(t, v, &pv, "pv", "pv0003")
		if pv.Spec.StorageClassName != "slow" {
			t.Errorf("a --dry-run=server patch was stored: storageClassName %q", pv.Spec.StorageClassName)
		}
	})

	step("label-annotate", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "label", "pv", "pv0003", "e2e=one"), "persistentvolume/pv0003 labeled")
		expectFail(t, m.kubectl(t, v, "label", "pv", "pv0003", "e2e=two"), "'e2e' already has a value (one), and --overwrite is false")
		expectOK(t, m.kubectl(t, v, "label", "pv", "pv0003", "e2e=two", "--overwrite"), "persistentvolume/pv0003 labeled")
		if out := m.mustKubectl(t, v, "get", "pv", "-l", "e2e=two", "-o", "name"); strings.TrimSpace(out) != "persistentvolume/pv0003" {
			t.Errorf("-l e2e=two after the overwrite: %q", out)
		}
		expectOK(t, m.kubectl(t, v, "label", "pv", "pv0003", "e2e-"), "persistentvolume/pv0003 unlabeled")
		var pv corev1.PersistentVolume
		m.getJSON(t, v, &pv, "pv", "pv0003")
		if _, ok := pv.Labels["e2e"]; ok {
			t.Errorf("label e2e still there after e2e-: %v", pv.Labels)
		}
		// several objects at once, by selector
		expectOK(t, m.kubectl(t, v, "label", "pvc", "-n", "seed000", "--all", "team=storage"),
			"persistentvolumeclaim/efs labeled", "persistentvolumeclaim/storage-claim labeled")

		// (kubectl 1.27 prints "annotate" where later versions print "annotated")
		expectOK(t, m.kubectl(t, v, "annotate", "sts", "web", "-n", "seed000", "e2e/note=hello world"), "statefulset.apps/web annotate")
		expectFail(t, m.kubectl(t, v, "annotate", "sts", "web", "-n", "seed000", "e2e/note=bye"), "--overwrite is false")
		expectOK(t, m.kubectl(t, v, "annotate", "sts", "web", "-n", "seed000", "--overwrite", "e2e/note=bye"), "statefulset.apps/web annotate")
		var sts appsv1.StatefulSet
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed000")
		if sts.Annotations["e2e/note"] != "bye" {
			t.Errorf("annotation e2e/note = %q, want bye", sts.Annotations["e2e/note"])
		}
		expectOK(t, m.kubectl(t, v, "annotate", "sts", "web", "-n", "seed000", "e2e/note-"), "statefulset.apps/web annotate")
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed000")
		if _, ok := sts.Annotations["e2e/note"]; ok {
			t.Errorf("annotation still there after e2e/note-")
		}
		if sts.Generation != 2 {
			t.Errorf("metadata changes must not bump generation: %d, want 2", sts.Generation)
		}
	})

	step("scale", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "scale", "sts", "web", "-n", "seed000", "--replicas=5"), "statefulset.apps/web scaled")
		var sts appsv1.StatefulSet
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed000")
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 5 {
			t.Errorf(".spec.replicas = %v after scale --replicas=5", sts.Spec.Replicas)
		}
		checkCol(t, m.kubectl(t, v, "get", "sts", "web", "-n", "seed000"), "READY", "0/5", "web")
		var scale map[string]any
		if err := json.Unmarshal([]byte(m.mustKubectl(t, v, "get", "--raw", "/apis/apps/v1/namespaces/seed000/statefulsets/web/scale")), &scale); err != nil {
			t.Fatal(err)
		}
		if scale["kind"] != "Scale" || scale["apiVersion"] != "autoscaling/v1" || fmt.Sprint(scale["spec"]) != "map[replicas:5]" ||
			fmt.Sprint(scale["status"].(map[string]any)["selector"]) != "app=nginx" {
			t.Errorf("GET …/scale = %v, want an autoscaling/v1 Scale with spec.replicas 5 and status.selector app=nginx", scale)
		}
		// --current-replicas makes kubectl GET the scale and PUT it back
		expectOK(t, m.kubectl(t, v, "scale", "sts", "web", "-n", "seed000", "--current-replicas=5", "--replicas=3"), "statefulset.apps/web scaled")
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed000")
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
			t.Errorf(".spec.replicas = %v after scale --current-replicas=5 --replicas=3", sts.Spec.Replicas)
		}
		checkCol(t, m.kubectl(t, v, "get", "sts", "web", "-n", "seed000"), "READY", "0/3", "web")
		expectFail(t, m.kubectl(t, v, "scale", "sts", "web", "-n", "seed000", "--current-replicas=9", "--replicas=1"), "Expected replicas to be 9, was 3")
		// scale by file, and --resource-version precondition
		expectOK(t, m.kubectl(t, v, "scale", "-n", "seed002", "-f", testdata("seed002-web.yaml"), "--replicas=4"), "statefulset.apps/web scaled")
		expectFail(t, m.kubectl(t, v, "scale", "sts", "web", "-n", "seed002", "--resource-version=1", "--replicas=1"), "Expected resource version to be 1, was ")
		// PUT …/scale with a stale resourceVersion conflicts
		raw := m.mustKubectl(t, v, "get", "--raw", "/apis/apps/v1/namespaces/seed002/statefulsets/web/scale")
		var sc map[string]any
		if err := json.Unmarshal([]byte(raw), &sc); err != nil {
			t.Fatal(err)
		}
		sc["metadata"].(map[string]any)["resourceVersion"] = "1"
		sc["spec"] = map[string]any{"replicas": 1}
		b, _ := json.Marshal(sc)
		stale := m.writeFile(t, "stale-scale.json", string(b))
		expectFail(t, m.kubectl(t, v, "replace", "--raw", "/apis/apps/v1/namespaces/seed002/statefulsets/web/scale", "-f", stale),
			"(Conflict)", "the object has been modified; please apply your changes to the latest version and try again")
		var web2 appsv1.StatefulSet
		m.getJSON(t, v, &web2, "sts", "web", "-n", "seed002")
		if web2.Spec.Replicas == nil || *web2.Spec.Replicas != 4 {
			t.Errorf("a conflicting scale PUT changed spec.replicas to %v", web2.Spec.Replicas)
		}
		expectFail(t, m.kubectl(t, v, "scale", "sts", "web", "-n", "seed002", "--replicas=-1"), "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
	})

	step("wait", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "wait", "--for=jsonpath={.spec.replicas}=3", "sts/web", "-n", "seed000", "--timeout=20s"), "statefulset.apps/web condition met")
		expectOK(t, m.kubectl(t, v, "wait", "--for=jsonpath={.spec.storageClassName}=normal", "pv", "-l", "release=stable", "--timeout=20s"), "persistentvolume/pv-1 condition met")
		r := m.kubectl(t, v, "wait", "--for=jsonpath={.spec.replicas}=7", "sts/web", "-n", "seed000", "--timeout=1s")
		expectFail(t, r, "timed out waiting for the condition on statefulsets/web")
		if v >= 28 { // jsonpath without a value: 1.28+
			expectOK(t, m.kubectl(t, v, "wait", "--for=jsonpath={.spec.serviceName}", "sts/web", "-n", "seed000", "--timeout=20s"), "statefulset.apps/web condition met")
		}
		if v >= 32 { // --for=create: 1.32+
			expectOK(t, m.kubectl(t, v, "wait", "--for=create", "pvc/myclaim", "-n", "seed002", "--timeout=20s"), "persistentvolumeclaim/myclaim condition met")
		}
	})

	step("apply-server-side", func(t *testing.T) {
		manifest := func(data string) string {
			return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-ssa\n  namespace: seed001\ndata:\n" + data
		}
		full := m.writeFile(t, "ssa-full.yaml", manifest("  a: \"1\"\n  b: \"2\"\n"))
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "-f", full), "configmap/e2e-ssa serverside-applied")
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "-f", full), "configmap/e2e-ssa serverside-applied")
		expectOK(t, m.kubectl(t, v, "patch", "cm", "e2e-ssa", "-n", "seed001", "--type=merge", "-p", `{"data":{"a":"patched"}}`), "configmap/e2e-ssa patched")
		r := m.kubectl(t, v, "apply", "--server-side", "-f", full)
		expectFail(t, r, "Apply failed with 1 conflict", `conflict with "kubectl-patch"`, ".data.a")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "e2e-ssa", "-n", "seed001")
		if cm.Data["a"] != "patched" {
			t.Errorf("a conflicting apply changed the object: %v", cm.Data)
		}
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "--force-conflicts", "-f", full), "configmap/e2e-ssa serverside-applied")
		m.getJSON(t, v, &cm, "cm", "e2e-ssa", "-n", "seed001")
		if cm.Data["a"] != "1" || cm.Data["b"] != "2" {
			t.Errorf("after --force-conflicts data = %v, want a=1 b=2", cm.Data)
		}
		// the managers as recorded
		out := m.mustKubectl(t, v, "get", "cm", "e2e-ssa", "-n", "seed001", "--show-managed-fields", "-o", "json")
		var withMF corev1.ConfigMap
		if err := json.Unmarshal([]byte(out), &withMF); err != nil {
			t.Fatal(err)
		}
		managers := map[string]string{}
		for _, f := range withMF.ManagedFields {
			managers[f.Manager] = string(f.Operation)
		}
		if managers["kubectl"] != "Apply" {
			t.Errorf("managedFields should hold manager kubectl (Apply), got %v", managers)
		}
		if strings.Contains(string(out), `"f:a"`) && strings.Count(out, `"f:a"`) != 1 {
			t.Errorf("after --force-conflicts only kubectl owns data.a:\n%s", out)
		}
		// dropping a field from the manifest removes it
		less := m.writeFile(t, "ssa-less.yaml", manifest("  a: \"1\"\n"))
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "-f", less), "configmap/e2e-ssa serverside-applied")
		m.getJSON(t, v, &cm, "cm", "e2e-ssa", "-n", "seed001")
		if _, ok := cm.Data["b"]; ok || cm.Data["a"] != "1" {
			t.Errorf("after applying without b, data = %v, want only a=1", cm.Data)
		}
		// a server-side apply that creates, with a field manager of its own
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "--field-manager=e2e-tool", "-n", "seed001", "-f", testdata("seed001-task-pv-claim.yaml")),
			"persistentvolumeclaim/task-pv-claim serverside-applied")
		// --dry-run=server with SSA stores nothing
		dry := m.writeFile(t, "ssa-dry.yaml", manifest("  a: \"dry\"\n"))
		expectOK(t, m.kubectl(t, v, "apply", "--server-side", "--dry-run=server", "-f", dry), "configmap/e2e-ssa serverside-applied (server dry run)")
		m.getJSON(t, v, &cm, "cm", "e2e-ssa", "-n", "seed001")
		if cm.Data["a"] != "1" {
			t.Errorf("a dry-run apply was stored: %v", cm.Data)
		}
	})

	step("diff", func(t *testing.T) {
		r := m.kubectl(t, v, "diff", "-f", testdata("seed000-db-config.yaml"))
		if r.Code != 0 || strings.TrimSpace(r.Stdout) != "" {
			t.Errorf("diff of an unchanged manifest: want exit 0 and no output\n%s", r)
		}
		b, _ := os.ReadFile(testdata("seed000-db-config.yaml"))
		changed := m.writeFile(t, "db-config-diff.yaml", strings.Replace(string(b), "1.2.3.4,5.6.7.8", "10.0.0.1", 1))
		r = m.kubectl(t, v, "diff", "-f", changed)
		if r.Code != 1 || !strings.Contains(r.Stdout, "-  db-ip-addresses: 1.2.3.4,5.6.7.8") || !strings.Contains(r.Stdout, "+  db-ip-addresses: 10.0.0.1") {
			t.Errorf("diff of a changed manifest: want exit 1 and the -/+ lines\n%s", r)
		}
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "db-config", "-n", "default")
		if cm.Data["db-ip-addresses"] != "1.2.3.4,5.6.7.8" {
			t.Errorf("diff changed the object: %v", cm.Data)
		}
		// a manifest for an object that does not exist yet
		newObj := m.writeFile(t, "diff-new.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-diff-new\n  namespace: seed000\ndata:\n  k: v\n")
		r = m.kubectl(t, v, "diff", "-f", newObj)
		if r.Code != 1 || !strings.Contains(r.Stdout, "+  name: e2e-diff-new") {
			t.Errorf("diff of a new object: want exit 1 and its lines\n%s", r)
		}
		m.expectNotFound(t, v, "cm", "e2e-diff-new", "-n", "seed000")
		r = m.kubectl(t, v, "diff", "--server-side", "-f", testdata("seed002-local-storage.yaml"))
		if r.Code != 1 { // the default-class annotation was added by kubectl annotate
			t.Errorf("diff --server-side after an annotate: want exit 1\n%s", r)
		}
	})

	step("replace", func(t *testing.T) {
		f := m.writeFile(t, "replace.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-replace\n  namespace: seed002\ndata:\n  x: edit-me\n")
		expectFail(t, m.kubectl(t, v, "replace", "-f", f), `Error from server (NotFound): error when replacing "`+f+`": configmaps "e2e-replace" not found`)
		expectOK(t, m.kubectl(t, v, "create", "-f", f), "configmap/e2e-replace created")
		f = m.writeFile(t, "replace.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-replace\n  namespace: seed002\ndata:\n  x: edit-me\n  extra: added\n")
		expectOK(t, m.kubectl(t, v, "replace", "-f", f), "configmap/e2e-replace replaced")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "e2e-replace", "-n", "seed002")
		if cm.Data["extra"] != "added" {
			t.Errorf("after replace data = %v", cm.Data)
		}
		// replace with a stale resourceVersion conflicts
		stale := m.writeFile(t, "replace-stale.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-replace\n  namespace: seed002\n  resourceVersion: \"1\"\ndata:\n  x: stale\n")
		expectFail(t, m.kubectl(t, v, "replace", "-f", stale), "(Conflict)", "the object has been modified; please apply your changes to the latest version and try again")
		// the seeds' StatefulSet, replaced from its file with a new image
		b, _ := os.ReadFile(testdata("seed002-web.yaml"))
		web := m.writeFile(t, "web-replace.yaml", strings.Replace(string(b), "nginx-slim:0.8", "nginx-slim:0.9", 1))
		expectOK(t, m.kubectl(t, v, "replace", "-n", "seed002", "-f", web), "statefulset.apps/web replaced")
		var sts appsv1.StatefulSet
		m.getJSON(t, v, &sts, "sts", "web", "-n", "seed002")
		if img := sts.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, "nginx-slim:0.9") {
			t.Errorf("image after replace: %s", img)
		}
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 2 {
			t.Errorf("replace sets spec.replicas back to the file's 2: %v", sts.Spec.Replicas)
		}
	})

	step("edit", func(t *testing.T) {
		editor := m.writeFile(t, "editor.sh", "#!/bin/sh\nsed -i 's/edit-me/edited/' \"$1\"\n")
		if err := os.Chmod(editor, 0o755); err != nil {
			t.Fatal(err)
		}
		r := m.kubectlEnvRun(t, v, []string{"KUBE_EDITOR=" + editor}, "", "edit", "cm", "e2e-replace", "-n", "seed002")
		expectOK(t, r, "configmap/e2e-replace edited")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "e2e-replace", "-n", "seed002")
		if cm.Data["x"] != "edited" {
			t.Errorf("after edit data = %v", cm.Data)
		}
		r = m.kubectlEnvRun(t, v, []string{"KUBE_EDITOR=" + editor}, "", "edit", "cm", "e2e-replace", "-n", "seed002")
		if r.Code != 0 || !strings.Contains(r.Stdout+r.Stderr, "Edit cancelled, no changes made.") {
			t.Errorf("an edit that changes nothing: want \"Edit cancelled, no changes made.\"\n%s", r)
		}
		// edit a PV (cluster-scoped) through the seed's object
		pvEditor := m.writeFile(t, "pv-editor.sh", "#!/bin/sh\nsed -i 's/persistentVolumeReclaimPolicy: Retain/persistentVolumeReclaimPolicy: Delete/' \"$1\"\n")
		_ = os.Chmod(pvEditor, 0o755)
		expectOK(t, m.kubectlEnvRun(t, v, []string{"KUBE_EDITOR=" + pvEditor}, "", "edit", "pv", "task-pv-volume"), "persistentvolume/task-pv-volume edited")
		var pv corev1.PersistentVolume
		m.getJSON(t, v, &pv, "pv", "task-pv-volume")
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("after edit reclaim policy = %s", pv.Spec.PersistentVolumeReclaimPolicy)
		}
	})

	step("api-resources", func(t *testing.T) {
		r := m.kubectl(t, v, "api-resources")
		expectHeader(t, r, "NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND")
		for _, want := range [][]string{
			{"configmaps", "cm", "v1", "true", "ConfigMap"},
			{"endpoints", "ep", "v1", "true", "Endpoints"},
			{"events", "ev", "v1", "true", "Event"},
			{"namespaces", "ns", "v1", "false", "Namespace"},
			{"nodes", "no", "v1", "false", "Node"},
			{"persistentvolumeclaims", "pvc", "v1", "true", "PersistentVolumeClaim"},
			{"persistentvolumes", "pv", "v1", "false", "PersistentVolume"},
			{"pods", "po", "v1", "true", "Pod"},
			{"replicationcontrollers", "rc", "v1", "true", "ReplicationController"},
			{"secrets", "v1", "true", "Secret"},
			{"serviceaccounts", "sa", "v1", "true", "ServiceAccount"},
			{"services", "svc", "v1", "true", "Service"},
			{"controllerrevisions", "apps/v1", "true", "ControllerRevision"},
			{"daemonsets", "ds", "apps/v1", "true", "DaemonSet"},
			{"deployments", "deploy", "apps/v1", "true", "Deployment"},
			{"replicasets", "rs", "apps/v1", "true", "ReplicaSet"},
			{"statefulsets", "sts", "apps/v1", "true", "StatefulSet"},
			{"leases", "coordination.k8s.io/v1", "true", "Lease"},
			{"endpointslices", "discovery.k8s.io/v1", "true", "EndpointSlice"},
			{"events", "ev", "events.k8s.io/v1", "true", "Event"},
			{"csidrivers", "storage.k8s.io/v1", "false", "CSIDriver"},
			{"csinodes", "storage.k8s.io/v1", "false", "CSINode"},
			{"storageclasses", "sc", "storage.k8s.io/v1", "false", "StorageClass"},
			{"volumeattachments", "storage.k8s.io/v1", "false", "VolumeAttachment"},
		} {
			if !hasRow(r.Stdout, want...) {
				t.Errorf("api-resources: no row %v\n%s", want, r)
			}
		}
		r = m.kubectl(t, v, "api-resources", "--api-group=storage.k8s.io", "--namespaced=false", "-o", "name")
		got := strings.Fields(r.Stdout)
		for _, want := range []string{"csidrivers.storage.k8s.io", "csinodes.storage.k8s.io", "storageclasses.storage.k8s.io", "volumeattachments.storage.k8s.io"} {
			if !contains(got, want) {
				t.Errorf("api-resources --api-group=storage.k8s.io -o name lacks %s\n%s", want, r)
			}
		}
		expectOK(t, m.kubectl(t, v, "api-versions"), "v1\n", "apps/v1\n", "storage.k8s.io/v1\n", "coordination.k8s.io/v1\n", "discovery.k8s.io/v1\n", "events.k8s.io/v1\n")
		// the short names work as types
		for _, short := range []string{"pvc", "pv", "sc", "sts", "cm", "ns", "svc", "ep", "ev", "sa", "rc", "ds", "rs", "deploy", "no", "po"} {
			if r := m.kubectl(t, v, "get", short, "-A", "-o", "name"); r.Code != 0 {
				t.Errorf("get %s failed\n%s", short, r)
			}
		}
	})

	step("explain", func(t *testing.T) {
		r := m.kubectl(t, v, "explain", "pvc.spec")
		expectOK(t, r, "KIND:", "PersistentVolumeClaim", "VERSION:", "v1", "FIELD:", "spec", "<PersistentVolumeClaimSpec>",
			"accessModes", "<[]string>", "resources", "<VolumeResourceRequirements>", "storageClassName", "volumeMode", "DESCRIPTION:")
		r = m.kubectl(t, v, "explain", "statefulsets.spec.updateStrategy")
		expectOK(t, r, "StatefulSet", "apps", "rollingUpdate", "type")
		r = m.kubectl(t, v, "explain", "storageclass")
		expectOK(t, r, "StorageClass", "storage.k8s.io", "provisioner", "reclaimPolicy", "volumeBindingMode", "-required-")
		r = m.kubectl(t, v, "explain", "pv.spec.nosuchfield")
		expectFail(t, r, `field "nosuchfield" does not exist`)
	})

	step("create-generators", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "create", "configmap", "e2e-gen", "-n", "seed002", "--from-literal=key=value", "--from-literal=other=2"), "configmap/e2e-gen created")
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "e2e-gen", "-n", "seed002")
		if fmt.Sprint(cm.Data) != "map[key:value other:2]" {
			t.Errorf("generated configmap data = %v", cm.Data)
		}
		seedFile := testdata("seed000-storage-claim.yaml")
		expectOK(t, m.kubectl(t, v, "create", "configmap", "e2e-gen-file", "-n", "seed002", "--from-file=claim.yaml="+seedFile), "configmap/e2e-gen-file created")
		m.getJSON(t, v, &cm, "cm", "e2e-gen-file", "-n", "seed002")
		want, _ := os.ReadFile(seedFile)
		if cm.Data["claim.yaml"] != string(want) {
			t.Errorf("--from-file content differs:\n%q\nwant\n%q", cm.Data["claim.yaml"], want)
		}
		expectOK(t, m.kubectl(t, v, "create", "secret", "generic", "e2e-gen", "-n", "seed002", "--from-literal=password=s3cr3t", "--type=e2e/test"), "secret/e2e-gen created")
		var sec corev1.Secret
		m.getJSON(t, v, &sec, "secret", "e2e-gen", "-n", "seed002")
		if string(sec.Data["password"]) != "s3cr3t" || sec.Type != "e2e/test" {
			t.Errorf("generated secret: type %q data %v", sec.Type, sec.Data)
		}
		out := m.mustKubectl(t, v, "get", "secret", "e2e-gen", "-n", "seed002", "-o", "jsonpath={.data.password}")
		if out != base64.StdEncoding.EncodeToString([]byte("s3cr3t")) {
			t.Errorf("-o jsonpath={.data.password} = %q, want base64 of s3cr3t", out)
		}
		expectOK(t, m.kubectl(t, v, "create", "namespace", "e2e-gen-ns"), "namespace/e2e-gen-ns created")
		expectOK(t, m.kubectl(t, v, "create", "secret", "tls", "e2e-tls", "-n", "seed002", "--cert="+writeTestCert(t, m, "tls.crt"), "--key="+writeTestCert(t, m, "tls.key")), "secret/e2e-tls created")
		m.getJSON(t, v, &sec, "secret", "e2e-tls", "-n", "seed002")
		if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.crt"]) == 0 || len(sec.Data["tls.key"]) == 0 {
			t.Errorf("tls secret: type %q keys %d", sec.Type, len(sec.Data))
		}
		// generator --dry-run=client -o yaml | create -f -
		gen := m.mustKubectl(t, v, "create", "configmap", "e2e-gen-pipe", "-n", "seed002", "--from-literal=a=b", "--dry-run=client", "-o", "yaml")
		expectOK(t, m.kubectlStdin(t, v, gen, "create", "-f", "-"), "configmap/e2e-gen-pipe created")
		// a generator into a namespace that does not exist
		expectFail(t, m.kubectl(t, v, "create", "configmap", "e2e-x", "-n", "no-such-ns", "--from-literal=a=b"), `namespaces "no-such-ns" not found`)
	})

	step("delete", func(t *testing.T) {
		expectOK(t, m.kubectl(t, v, "delete", "configmap", "e2e-gen", "-n", "seed002"), `configmap "e2e-gen" deleted`)
		m.expectNotFound(t, v, "configmap", "e2e-gen", "-n", "seed002")
		expectFail(t, m.kubectl(t, v, "delete", "configmap", "e2e-gen", "-n", "seed002"), `Error from server (NotFound): configmaps "e2e-gen" not found`)
		expectOK(t, m.kubectl(t, v, "delete", "configmap", "e2e-gen", "-n", "seed002", "--ignore-not-found"))
		// --wait (the default) and by file
		expectOK(t, m.kubectl(t, v, "delete", "-n", "seed002", "--wait=true", "-f", testdata("seed002-nginx.yaml")), `service "nginx" deleted`)
		m.expectNotFound(t, v, "svc", "nginx", "-n", "seed002")
		expectOK(t, m.kubectl(t, v, "delete", "sts", "web", "-n", "seed002", "--wait"), `statefulset.apps "web" deleted`)
		m.expectNotFound(t, v, "sts", "web", "-n", "seed002")
		// by label
		for _, n := range []string{"e2e-del-1", "e2e-del-2", "e2e-keep"} {
			expectOK(t, m.kubectl(t, v, "create", "configmap", n, "-n", "seed002", "--from-literal=a=b"), "configmap/"+n+" created")
		}
		expectOK(t, m.kubectl(t, v, "label", "cm", "e2e-del-1", "e2e-del-2", "-n", "seed002", "e2e=delete-me"))
		r := m.kubectl(t, v, "delete", "cm", "-n", "seed002", "-l", "e2e=delete-me")
		expectOK(t, r, `configmap "e2e-del-1" deleted`, `configmap "e2e-del-2" deleted`)
		if strings.Contains(r.Stdout, "e2e-keep") {
			t.Errorf("delete -l deleted an unlabeled object\n%s", r)
		}
		if out := m.mustKubectl(t, v, "get", "cm", "-n", "seed002", "-l", "e2e=delete-me", "-o", "name"); strings.TrimSpace(out) != "" {
			t.Errorf("labeled objects left after delete -l: %s", out)
		}
		m.mustKubectl(t, v, "get", "cm", "e2e-keep", "-n", "seed002")
		// --dry-run=server deletes nothing
		expectOK(t, m.kubectl(t, v, "delete", "cm", "e2e-keep", "-n", "seed002", "--dry-run=server"), `configmap "e2e-keep" deleted (server dry run)`)
		m.mustKubectl(t, v, "get", "cm", "e2e-keep", "-n", "seed002")
	})

	step("finalizer-and-wait-for-delete", func(t *testing.T) {
		f := m.writeFile(t, "fin.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-fin\n  namespace: seed002\n  finalizers: [\"e2e.moorage.dev/hold\"]\ndata:\n  a: b\n")
		expectOK(t, m.kubectl(t, v, "create", "-f", f), "configmap/e2e-fin created")
		expectOK(t, m.kubectl(t, v, "delete", "cm", "e2e-fin", "-n", "seed002", "--wait=false"), `configmap "e2e-fin" deleted`)
		var cm corev1.ConfigMap
		m.getJSON(t, v, &cm, "cm", "e2e-fin", "-n", "seed002")
		if cm.DeletionTimestamp == nil {
			t.Errorf("an object with a finalizer stays, with a deletionTimestamp, after delete")
		}
		w := m.kubectlBackground(t, v, "wait", "--for=delete", "cm/e2e-fin", "-n", "seed002", "--timeout=30s")
		time.Sleep(500 * time.Millisecond)
		expectOK(t, m.kubectl(t, v, "patch", "cm", "e2e-fin", "-n", "seed002", "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`), "configmap/e2e-fin patched")
		if _, ok := w.WaitLine(30*time.Second, func(l string) bool { return strings.Contains(l, "configmap/e2e-fin condition met") }); !ok {
			t.Errorf("wait --for=delete did not report the deletion\n%s", w.Output())
		}
		m.expectNotFound(t, v, "cm", "e2e-fin", "-n", "seed002")
		// wait --for=delete on an object that is already gone succeeds at once
		r := m.kubectl(t, v, "wait", "--for=delete", "cm/e2e-fin", "-n", "seed002", "--timeout=5s")
		if r.Code != 0 {
			t.Errorf("wait --for=delete of a missing object succeeds\n%s", r)
		}
	})

	step("delete-namespace/finish", func(t *testing.T) {
		r := m.kubectl(t, v, "wait", "--for=delete", "namespace/"+doomed, "--timeout=30s")
		if r.Code != 0 {
			t.Errorf("namespace %s (deleted at the start of the session) is still there: the namespace controller should have emptied and removed it\n%s\n%s",
				doomed, r, m.kubectl(t, v, "get", "namespace", doomed, "-o", "yaml"))
		}
		m.expectNotFound(t, v, "namespace", doomed)
		m.expectNotFound(t, v, "configmap", "content", "-n", doomed)
		if out := m.mustKubectl(t, v, "get", "configmap", "-A", "--field-selector", "metadata.namespace="+doomed, "-o", "name"); strings.TrimSpace(out) != "" {
			t.Errorf("the deleted namespace's content is still stored: %s", out)
		}
	})
}

// checkSeedDefaults reads the seed objects back, as lists, in JSON and YAML,
// and checks the fields the API server fills in.
func checkSeedDefaults(t *testing.T, m *moorage, v int) {
	// Every object: identity and the client-side apply annotation; -o yaml
	// and -o json agree.
	for _, res := range []string{pvResource, pvcResource, scResource, stsResource, svcResource, cmResource, secResource} {
		js := m.mustKubectl(t, v, "get", res, "-A", "-o", "json")
		ym := m.mustKubectl(t, v, "get", res, "-A", "-o", "yaml")
		var fromJSON, fromYAML struct {
			APIVersion string           `json:"apiVersion"`
			Kind       string           `json:"kind"`
			Items      []map[string]any `json:"items"`
		}
		if err := json.Unmarshal([]byte(js), &fromJSON); err != nil {
			t.Errorf("get %s -A -o json does not parse: %v", res, err)
			continue
		}
		if err := yaml.Unmarshal([]byte(ym), &fromYAML); err != nil {
			t.Errorf("get %s -A -o yaml does not parse: %v\n%s", res, err, ym)
			continue
		}
		if fromJSON.Kind != "List" || fromJSON.APIVersion != "v1" {
			t.Errorf("get %s -o json: kind %q apiVersion %q, want List v1", res, fromJSON.Kind, fromJSON.APIVersion)
		}
		if fmt.Sprint(fromYAML) != fmt.Sprint(fromJSON) {
			t.Errorf("get %s: -o yaml and -o json differ:\n%v\n%v", res, fromYAML, fromJSON)
		}
		byKey := map[string]map[string]any{}
		for _, it := range fromJSON.Items {
			meta, _ := it["metadata"].(map[string]any)
			ns, _ := meta["namespace"].(string)
			name, _ := meta["name"].(string)
			byKey[ns+"/"+name] = it
		}
		for _, o := range seedObjects {
			if o.Resource != res {
				continue
			}
			it, ok := byKey[o.Namespace+"/"+o.Name]
			if !ok {
				t.Errorf("get %s -A lacks %s/%s", res, o.Namespace, o.Name)
				continue
			}
			meta, _ := it["metadata"].(map[string]any)
			for _, k := range []string{"uid", "resourceVersion", "creationTimestamp"} {
				if s, _ := meta[k].(string); s == "" {
					t.Errorf("%s: metadata.%s is empty", o.Ref(), k)
				}
			}
			if _, ok := meta["managedFields"]; ok {
				t.Errorf("%s: kubectl hides managedFields unless --show-managed-fields", o.Ref())
			}
			ann, _ := meta["annotations"].(map[string]any)
			if s, _ := ann["kubectl.kubernetes.io/last-applied-configuration"].(string); !strings.Contains(s, `"name":"`+o.Name+`"`) {
				t.Errorf("%s: no last-applied-configuration annotation naming it: %v", o.Ref(), ann)
			}
			if kind, _ := it["kind"].(string); kind == "" {
				t.Errorf("%s: list items carry their kind", o.Ref())
			}
		}
	}

	// PersistentVolumeClaims: volumeMode defaults to Filesystem. (The
	// protection finalizers come with their controllers, in the binder issue.)
	var pvcs corev1.PersistentVolumeClaimList
	m.getJSON(t, v, &pvcs, "pvc", "-A")
	pvcBy := map[string]corev1.PersistentVolumeClaim{}
	for _, p := range pvcs.Items {
		pvcBy[p.Name] = p
	}
	for _, o := range seedObjects {
		if o.Resource != pvcResource {
			continue
		}
		pvc := pvcBy[o.Name]
		wantMode := corev1.PersistentVolumeFilesystem
		if o.Name == "block-pvc" {
			wantMode = corev1.PersistentVolumeBlock
		}
		if pvc.Spec.VolumeMode == nil || *pvc.Spec.VolumeMode != wantMode {
			t.Errorf("pvc %s: spec.volumeMode = %v, want %s", o.Name, pvc.Spec.VolumeMode, wantMode)
		}
		// Claims bind where a seed's volume fits (binding_test.go checks
		// which); a Bound claim names its volume.
		switch pvc.Status.Phase {
		case corev1.ClaimPending:
		case corev1.ClaimBound:
			if pvc.Spec.VolumeName == "" {
				t.Errorf("pvc %s: Bound without spec.volumeName", o.Name)
			}
		default:
			t.Errorf("pvc %s: status.phase = %q, want Pending or Bound", o.Name, pvc.Status.Phase)
		}
	}
	claim := pvcBy["storage-claim"]
	if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "normal" || claim.Spec.Selector == nil ||
		claim.Spec.Selector.MatchLabels["release"] != "stable" || len(claim.Spec.Selector.MatchExpressions) != 1 ||
		fmt.Sprint(claim.Spec.Selector.MatchExpressions[0].Values) != "[80Gi 100Gi]" || claim.Spec.Resources.Requests.Storage().String() != "80Gi" {
		t.Errorf("pvc storage-claim spec does not round-trip: %+v", claim.Spec)
	}

	// PersistentVolumes: reclaim policy defaults to Retain, volumeMode to
	// Filesystem.
	var pvs corev1.PersistentVolumeList
	m.getJSON(t, v, &pvs, "pv")
	pvBy := map[string]corev1.PersistentVolume{}
	for _, p := range pvs.Items {
		pvBy[p.Name] = p
	}
	for _, o := range seedObjects {
		if o.Resource != pvResource {
			continue
		}
		pv := pvBy[o.Name]
		wantMode := corev1.PersistentVolumeFilesystem
		if o.Name == "block-pv" {
			wantMode = corev1.PersistentVolumeBlock
		}
		if pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != wantMode {
			t.Errorf("pv %s: spec.volumeMode = %v, want %s", o.Name, pv.Spec.VolumeMode, wantMode)
		}
		if pv.Spec.PersistentVolumeReclaimPolicy == "" {
			t.Errorf("pv %s: no reclaim policy", o.Name)
		}
	}
	pv := pvBy["task-pv-volume"]
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("pv task-pv-volume: persistentVolumeReclaimPolicy = %q, want the default Retain", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if pv.Spec.HostPath == nil || pv.Spec.HostPath.Type == nil || *pv.Spec.HostPath.Type != corev1.HostPathUnset {
		t.Errorf("pv task-pv-volume: spec.hostPath.type should default to \"\" (present), got %+v", pv.Spec.HostPath)
	}
	pv = pvBy["pv0003"]
	if fmt.Sprint(pv.Spec.MountOptions) != "[hard nfsvers=4.1]" || pv.Spec.NFS == nil || pv.Spec.NFS.Server != "172.17.0.2" {
		t.Errorf("pv pv0003 spec does not round-trip: %+v", pv.Spec)
	}
	pv = pvBy["local-pv1"]
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil ||
		pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "kube-node-1" {
		t.Errorf("pv local-pv1 nodeAffinity does not round-trip: %+v", pv.Spec.NodeAffinity)
	}

	// StorageClasses: reclaimPolicy Delete, volumeBindingMode Immediate.
	var scs storagev1.StorageClassList
	m.getJSON(t, v, &scs, "sc")
	scBy := map[string]storagev1.StorageClass{}
	for _, c := range scs.Items {
		scBy[c.Name] = c
	}
	for _, o := range seedObjects {
		if o.Resource != scResource {
			continue
		}
		sc := scBy[o.Name]
		wantMode := storagev1.VolumeBindingImmediate
		if o.Name == "local-storage" {
			wantMode = storagev1.VolumeBindingWaitForFirstConsumer
		}
		if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("sc %s: reclaimPolicy = %v, want Delete", o.Name, sc.ReclaimPolicy)
		}
		if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != wantMode {
			t.Errorf("sc %s: volumeBindingMode = %v, want %s", o.Name, sc.VolumeBindingMode, wantMode)
		}
		if sc.AllowVolumeExpansion != nil {
			t.Errorf("sc %s: allowVolumeExpansion should stay unset, got %v", o.Name, *sc.AllowVolumeExpansion)
		}
	}
	if p := scBy["fast"].Parameters; p["adminSecretNamespace"] != "kube-system" || p["monitors"] != "10.16.153.105:6789" || len(p) != 7 {
		t.Errorf("sc fast parameters do not round-trip: %v", p)
	}

	// StatefulSets: the apps/v1 defaults.
	var stss appsv1.StatefulSetList
	m.getJSON(t, v, &stss, "sts", "-A")
	stsBy := map[string]appsv1.StatefulSet{}
	for _, x := range stss.Items {
		stsBy[x.Namespace+"/"+x.Name] = x
	}
	for _, o := range seedObjects {
		if o.Resource != stsResource {
			continue
		}
		sts := stsBy[o.Namespace+"/"+o.Name]
		s := sts.Spec
		if s.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType || s.UpdateStrategy.RollingUpdate == nil ||
			s.UpdateStrategy.RollingUpdate.Partition == nil || *s.UpdateStrategy.RollingUpdate.Partition != 0 {
			t.Errorf("sts %s: updateStrategy = %+v, want RollingUpdate with partition 0", o.Ref(), s.UpdateStrategy)
		}
		if s.PodManagementPolicy != appsv1.OrderedReadyPodManagement {
			t.Errorf("sts %s: podManagementPolicy = %q, want OrderedReady", o.Ref(), s.PodManagementPolicy)
		}
		if s.RevisionHistoryLimit == nil || *s.RevisionHistoryLimit != 10 {
			t.Errorf("sts %s: revisionHistoryLimit = %v, want 10", o.Ref(), s.RevisionHistoryLimit)
		}
		if p := s.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
			t.Errorf("sts %s: persistentVolumeClaimRetentionPolicy = %+v, want Retain/Retain", o.Ref(), p)
		}
		if sts.Generation != 1 {
			t.Errorf("sts %s: metadata.generation = %d, want 1", o.Ref(), sts.Generation)
		}
		ps := s.Template.Spec
		if ps.RestartPolicy != corev1.RestartPolicyAlways || ps.DNSPolicy != corev1.DNSClusterFirst || ps.SchedulerName != "default-scheduler" ||
			ps.SecurityContext == nil || ps.TerminationGracePeriodSeconds == nil {
			t.Errorf("sts %s: pod template defaults missing: restartPolicy %q dnsPolicy %q schedulerName %q securityContext %v terminationGracePeriodSeconds %v",
				o.Ref(), ps.RestartPolicy, ps.DNSPolicy, ps.SchedulerName, ps.SecurityContext, ps.TerminationGracePeriodSeconds)
		}
		for _, c := range append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...) {
			wantPull := corev1.PullIfNotPresent
			if strings.HasSuffix(c.Image, ":latest") {
				wantPull = corev1.PullAlways
			}
			if c.ImagePullPolicy != wantPull || c.TerminationMessagePath != "/dev/termination-log" || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
				t.Errorf("sts %s container %s: imagePullPolicy %q (want %s) terminationMessagePath %q terminationMessagePolicy %q",
					o.Ref(), c.Name, c.ImagePullPolicy, wantPull, c.TerminationMessagePath, c.TerminationMessagePolicy)
			}
			for _, p := range c.Ports {
				if p.Protocol != corev1.ProtocolTCP {
					t.Errorf("sts %s container %s: port %d protocol %q, want TCP", o.Ref(), c.Name, p.ContainerPort, p.Protocol)
				}
			}
		}
		for _, vct := range s.VolumeClaimTemplates {
			if vct.Spec.VolumeMode == nil || *vct.Spec.VolumeMode != corev1.PersistentVolumeFilesystem {
				t.Errorf("sts %s: volumeClaimTemplate %s volumeMode = %v, want Filesystem", o.Ref(), vct.Name, vct.Spec.VolumeMode)
			}
		}
	}
	if g := stsBy["seed000/web"].Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 10 {
		t.Errorf("sts seed000/web: terminationGracePeriodSeconds = %v, want the manifest's 10", g)
	}
	if g := stsBy["seed002/web"].Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("sts seed002/web: terminationGracePeriodSeconds = %v, want the default 30", g)
	}
	mysql := stsBy["seed001/mysql"]
	if len(mysql.Spec.Template.Spec.InitContainers) != 2 || len(mysql.Spec.Template.Spec.Volumes) != 2 || len(mysql.Spec.VolumeClaimTemplates) != 1 ||
		mysql.Spec.VolumeClaimTemplates[0].Annotations["volume.beta.kubernetes.io/storage-class"] != "glusterfs-storage" || len(mysql.Spec.Template.Spec.Containers) != 2 ||
		!strings.Contains(strings.Join(mysql.Spec.Template.Spec.Containers[1].Command, " "), "exec ncat --listen --keep-open --send-only --max-conns=1 3307 -c") {
		t.Errorf("sts seed001/mysql does not round-trip")
	}

	// Services: ClusterIP allocation and the defaults.
	var svcs corev1.ServiceList
	m.getJSON(t, v, &svcs, "svc", "-A")
	svcBy := map[string]corev1.Service{}
	for _, x := range svcs.Items {
		svcBy[x.Namespace+"/"+x.Name] = x
	}
	for _, o := range seedObjects {
		if o.Resource != svcResource {
			continue
		}
		s := svcBy[o.Namespace+"/"+o.Name].Spec
		if s.Type != corev1.ServiceTypeClusterIP || s.SessionAffinity != corev1.ServiceAffinityNone ||
			s.InternalTrafficPolicy == nil || *s.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyCluster {
			t.Errorf("svc %s: type %q sessionAffinity %q internalTrafficPolicy %v, want ClusterIP/None/Cluster", o.Ref(), s.Type, s.SessionAffinity, s.InternalTrafficPolicy)
		}
		for _, p := range s.Ports {
			if p.Protocol != corev1.ProtocolTCP || p.TargetPort != intstr.FromInt32(p.Port) {
				t.Errorf("svc %s: port %+v, want protocol TCP and targetPort = port", o.Ref(), p)
			}
		}
		if len(s.IPFamilies) == 0 || s.IPFamilyPolicy == nil {
			t.Errorf("svc %s: ipFamilies %v ipFamilyPolicy %v, want them set", o.Ref(), s.IPFamilies, s.IPFamilyPolicy)
		}
		if o.Name == "mysql-read" {
			ip := net.ParseIP(s.ClusterIP)
			if ip == nil || ip.To4() == nil || len(s.ClusterIPs) != 1 || s.ClusterIPs[0] != s.ClusterIP ||
				fmt.Sprint(s.IPFamilies) != "[IPv4]" || s.IPFamilyPolicy == nil || *s.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
				t.Errorf("svc %s: clusterIP %q clusterIPs %v ipFamilies %v ipFamilyPolicy %v, want an allocated IPv4 address, SingleStack",
					o.Ref(), s.ClusterIP, s.ClusterIPs, s.IPFamilies, s.IPFamilyPolicy)
			}
		} else if s.ClusterIP != corev1.ClusterIPNone || fmt.Sprint(s.ClusterIPs) != "[None]" {
			t.Errorf("svc %s: headless: clusterIP %q clusterIPs %v, want None/[None]", o.Ref(), s.ClusterIP, s.ClusterIPs)
		}
	}

	// Secrets and ConfigMaps round-trip their data.
	var sec corev1.Secret
	m.getJSON(t, v, &sec, "secret", "azure-file-secret", "-n", "seed000")
	if sec.Type != corev1.SecretTypeOpaque || string(sec.Data["azurestorageaccountname"]) != "<account name>" || string(sec.Data["azurestorageaccountkey"]) != "<account key>" {
		t.Errorf("secret azure-file-secret: type %q data %q", sec.Type, sec.Data)
	}
	m.getJSON(t, v, &sec, "secret", "ceph-secret", "-n", "seed000")
	if sec.Type != "kubernetes.io/rbd" || string(sec.Data["key"]) != "AQB16V1VoF5mExAA5kCQs7bBj8VULRw26C84HA==" {
		t.Errorf("secret ceph-secret: type %q data %q", sec.Type, sec.Data)
	}
	var cm corev1.ConfigMap
	m.getJSON(t, v, &cm, "cm", "mysql", "-n", "seed001")
	if cm.Data["master.cnf"] != "# master config\n[mysqld]\nlog-bin\n" || cm.Data["slave.cnf"] != "# slave config\n[mysqld]\nsuper-read-only\n" {
		t.Errorf("configmap mysql data: %q", cm.Data)
	}
	// jsonpath and custom-columns read the same fields
	if out := m.mustKubectl(t, v, "get", "pvc", "-n", "seed000", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.volumeMode}{\" \"}{end}"); strings.TrimSpace(out) != "block-pvc=Block efs=Filesystem persistent-volume-claim=Filesystem storage-claim=Filesystem" {
		t.Errorf("-o jsonpath over the list: %q", out)
	}
	r := m.kubectl(t, v, "get", "sts", "-A", "-o", "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,POLICY:.spec.podManagementPolicy,PART:.spec.updateStrategy.rollingUpdate.partition")
	expectHeader(t, r, "NS", "NAME", "POLICY", "PART")
	if !hasRow(r.Stdout, "seed000", "web", "OrderedReady", "0") || !hasRow(r.Stdout, "seed001", "mysql", "OrderedReady", "0") {
		t.Errorf("custom-columns\n%s", r)
	}
	// a single object, in YAML, as a user reads it
	r = m.kubectl(t, v, "get", "pvc", "efs", "-n", "seed000", "-o", "yaml")
	expectOK(t, r, "apiVersion: v1\n", "kind: PersistentVolumeClaim\n", "  volumeMode: Filesystem\n", "    volume.beta.kubernetes.io/storage-class: aws-efs\n", "  phase: Pending\n")
}

func indexOf(file string) int {
	for i, o := range seedObjects {
		if o.File == file {
			return i
		}
	}
	panic(file)
}

// checkCol checks one cell of a table (the row found by its leading fields).
func checkCol(t testing.TB, r result, col, want string, lead ...string) {
	t.Helper()
	got, ok := columnValue(r.Stdout, col, lead...)
	if !ok {
		t.Errorf("no row %v or no column %s\n%s", lead, col, r)
		return
	}
	if got != want {
		t.Errorf("row %v column %s = %q, want %q\n%s", lead, col, got, want, r)
	}
}

// hasRow reports whether a table has a row whose fields are exactly want
// (ignoring the ones after, such as AGE).
func hasRow(table string, want ...string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) < len(want) {
			continue
		}
		ok := true
		for i := range want {
			if f[i] != want[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func fieldsPrefix(line string, want ...string) bool { return hasRow(line, want...) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeTestCert writes a fixed self-signed certificate or key for
// `kubectl create secret tls`.
func writeTestCert(t testing.TB, m *moorage, name string) string {
	t.Helper()
	p := filepath.Join(m.tmp, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	certPEM, keyPEM := testCertificate(t)
	m.writeFile(t, "tls.crt", certPEM)
	m.writeFile(t, "tls.key", keyPEM)
	return p
}
