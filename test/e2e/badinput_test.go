package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// TestBadInput sends what a user gets wrong, with one kubectl version: each
// case must exit non-zero with a message naming the field, and leave the
// object absent or unchanged.
func TestBadInput(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "bad")
	seed := func(name string) string {
		b, err := os.ReadFile(testdata(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("malformed-yaml", func(t *testing.T) {
		f := m.writeFile(t, "malformed.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "    - ReadWriteOnce", "    - [ReadWriteOnce", 1))
		for _, verb := range []string{"create", "apply"} {
			expectFail(t, m.kubectl(t, v, verb, "-n", "bad", "-f", f), "error: error parsing "+f+": error converting YAML to JSON: yaml: line ")
		}
		m.expectNotFound(t, v, "pvc", "task-pv-claim", "-n", "bad")
		// JSON that stops half-way, on stdin
		r := m.kubectlStdin(t, v, `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "half"`, "create", "-n", "bad", "-f", "-")
		expectFail(t, r, "error: error parsing STDIN")
		m.expectNotFound(t, v, "cm", "half", "-n", "bad")
		// a manifest without a kind
		f = m.writeFile(t, "nokind.yaml", "apiVersion: v1\nmetadata:\n  name: nokind\ndata:\n  a: b\n")
		r = m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		if r.Code == 0 || !(strings.Contains(r.Stderr, "kind not set") || strings.Contains(r.Stderr, "Object 'Kind' is missing")) {
			t.Errorf("a manifest without kind: want kubectl's \"kind not set\" error\n%s", r)
		}
	})

	t.Run("unknown-field", func(t *testing.T) {
		f := testdata("broken/seed000-persistent-volume-1-typo.yaml")
		// strict is kubectl's default (--validate=true means strict)
		for _, args := range [][]string{{"create", "-f", f}, {"apply", "-f", f}, {"create", "--validate=strict", "-f", f}} {
			r := m.kubectl(t, v, args...)
			expectFail(t, r, `(BadRequest)`, `PersistentVolume in version "v1" cannot be handled as a PersistentVolume: strict decoding error: unknown field "spec.StorageClassName"`)
			m.expectNotFound(t, v, "pv", "persistent-volume-1")
		}
		// warn: created, with the warning; the unknown field is dropped
		r := m.kubectl(t, v, "create", "--validate=warn", "-f", f)
		expectOK(t, r, "persistentvolume/persistent-volume-1 created")
		if !strings.Contains(r.Stderr, `Warning: unknown field "spec.StorageClassName"`) {
			t.Errorf("--validate=warn: want the warning on stderr\n%s", r)
		}
		var pv corev1.PersistentVolume
		m.getJSON(t, v, &pv, "pv", "persistent-volume-1")
		if pv.Spec.StorageClassName != "" {
			t.Errorf("the unknown field became storageClassName %q", pv.Spec.StorageClassName)
		}
		m.mustKubectl(t, v, "delete", "pv", "persistent-volume-1", "--wait=false")
		// ignore: created silently
		f2 := m.writeFile(t, "typo-ignore.yaml", strings.Replace(readFile(t, f), "name: persistent-volume-1", "name: e2e-typo-ignore", 1))
		r = m.kubectl(t, v, "create", "--validate=ignore", "-f", f2)
		expectOK(t, r, "persistentvolume/e2e-typo-ignore created")
		if strings.Contains(r.Stderr, "unknown field") {
			t.Errorf("--validate=ignore prints no warning\n%s", r)
		}
		// an unknown field in a patch
		m.mustKubectl(t, v, "create", "configmap", "e2e-cm", "-n", "bad", "--from-literal=a=b")
		// (kubectl patch sends no fieldValidation: the server's default, Warn)
		r = m.kubectl(t, v, "patch", "cm", "e2e-cm", "-n", "bad", "--type=merge", "-p", `{"dta":{"x":"y"}}`)
		expectOK(t, r, "configmap/e2e-cm patched (no change)")
		if !strings.Contains(r.Stderr, `Warning: unknown field "dta"`) {
			t.Errorf("a patch with an unknown field: want the warning\n%s", r)
		}
	})

	t.Run("invalid-name", func(t *testing.T) {
		f := m.writeFile(t, "invalid-name.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "name: task-pv-claim", "name: Invalid_Name", 1))
		for _, verb := range []string{"create", "apply"} {
			r := m.kubectl(t, v, verb, "-n", "bad", "-f", f)
			expectFail(t, r, `The PersistentVolumeClaim "Invalid_Name" is invalid: metadata.name: Invalid value: "Invalid_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`)
		}
		m.expectNotFound(t, v, "pvc", "Invalid_Name", "-n", "bad")
		r := m.kubectl(t, v, "create", "configmap", "Invalid_Name", "-n", "bad", "--from-literal=a=b")
		// (kubectl's generators print "error: failed to create configmap: <server message>")
		expectFail(t, r, `ConfigMap "Invalid_Name" is invalid: metadata.name: Invalid value: "Invalid_Name": a lowercase RFC 1123 subdomain`)
		m.expectNotFound(t, v, "cm", "Invalid_Name", "-n", "bad")
		// a data key that is not a valid key (the generator checks it itself; a manifest reaches the server)
		r = m.kubectl(t, v, "create", "configmap", "bad-key", "-n", "bad", "--from-literal=no/slash=1")
		expectFail(t, r, `"no/slash" is not a valid key name for a ConfigMap`)
		f = m.writeFile(t, "bad-key.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad-key\ndata:\n  no/slash: \"1\"\n")
		r = m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		expectFail(t, r, `The ConfigMap "bad-key" is invalid: data[no/slash]: Invalid value: "no/slash": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`)
		m.expectNotFound(t, v, "cm", "bad-key", "-n", "bad")
		// a PV without capacity or volume source
		f = m.writeFile(t, "pv-empty.yaml", "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: e2e-empty\nspec:\n  accessModes: [ReadWriteOnce]\n")
		r = m.kubectl(t, v, "create", "-f", f)
		expectFail(t, r, `The PersistentVolume "e2e-empty" is invalid`, `spec.capacity: Required value`, `spec: Required value: must specify a volume type`)
		m.expectNotFound(t, v, "pv", "e2e-empty")
		// a PVC with an unsupported access mode
		f = m.writeFile(t, "pvc-mode.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "- ReadWriteOnce", "- ReadWriteSometimes", 1))
		r = m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		expectFail(t, r, `The PersistentVolumeClaim "task-pv-claim" is invalid: spec.accessModes: Unsupported value: "ReadWriteSometimes": supported values: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"`)
		m.expectNotFound(t, v, "pvc", "task-pv-claim", "-n", "bad")
		// a StatefulSet whose selector does not match its template
		f = m.writeFile(t, "sts-selector.yaml", strings.Replace(seed("seed002-web.yaml"), "      app: nginx\n  serviceName", "      app: other\n  serviceName", 1))
		r = m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		expectFail(t, r, `The StatefulSet "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"nginx"}: `+"`selector` does not match template `labels`")
		m.expectNotFound(t, v, "sts", "web", "-n", "bad")
	})

	t.Run("invalid-quantity", func(t *testing.T) {
		// 1Gib, as seed 000 writes it. Upstream's decoder reports the
		// quantity syntax; its message does not name the field.
		f := m.writeFile(t, "quantity.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "storage: 3Gi", "storage: 1Gib", 1))
		for _, verb := range []string{"create", "apply"} {
			r := m.kubectl(t, v, verb, "-n", "bad", "-f", f)
			expectFail(t, r, `(BadRequest)`, `PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: `,
				`quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`)
		}
		m.expectNotFound(t, v, "pvc", "task-pv-claim", "-n", "bad")
		// a negative request is syntactically a quantity but invalid
		f = m.writeFile(t, "quantity-neg.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "storage: 3Gi", "storage: -1Gi", 1))
		r := m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		expectFail(t, r, `The PersistentVolumeClaim "task-pv-claim" is invalid: spec.resources[storage]: Invalid value: "-1Gi": must be greater than zero`)
		m.expectNotFound(t, v, "pvc", "task-pv-claim", "-n", "bad")
		// zero storage
		f = m.writeFile(t, "quantity-zero.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "storage: 3Gi", "storage: 0", 1))
		r = m.kubectl(t, v, "create", "-n", "bad", "-f", f)
		expectFail(t, r, `The PersistentVolumeClaim "task-pv-claim" is invalid: spec.resources[storage]: Invalid value: "0": must be greater than zero`)
		m.expectNotFound(t, v, "pvc", "task-pv-claim", "-n", "bad")
	})

	t.Run("too-large", func(t *testing.T) {
		big := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-big\n  namespace: bad\ndata:\n  big: " + strings.Repeat("x", 4<<20) + "\n"
		f := m.writeFile(t, "big.yaml", big)
		r := m.kubectl(t, v, "create", "-f", f)
		expectFail(t, r, `(RequestEntityTooLarge)`, `Request entity too large: limit is 3145728`)
		m.expectNotFound(t, v, "cm", "e2e-big", "-n", "bad")
		// over the 1 MiB ConfigMap limit but under the request limit: 422
		mid := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-mid\n  namespace: bad\ndata:\n  mid: " + strings.Repeat("x", 1536<<10) + "\n"
		f = m.writeFile(t, "mid.yaml", mid)
		r = m.kubectl(t, v, "create", "-f", f)
		expectFail(t, r, `The ConfigMap "e2e-mid" is invalid: `, `Too long: may not be more than 1048576 bytes`)
		m.expectNotFound(t, v, "cm", "e2e-mid", "-n", "bad")
		// the same through the generator (protobuf body)
		data := m.writeFile(t, "big.bin", strings.Repeat("y", 4<<20))
		r = m.kubectl(t, v, "create", "configmap", "e2e-big-gen", "-n", "bad", "--from-file=big="+data)
		expectFail(t, r, `Request entity too large: limit is 3145728`)
		m.expectNotFound(t, v, "cm", "e2e-big-gen", "-n", "bad")
	})

	t.Run("kind-mismatch", func(t *testing.T) {
		cm := m.writeFile(t, "cm.json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"e2e-mismatch","namespace":"bad"},"data":{"a":"b"}}`)
		r := m.kubectl(t, v, "create", "--raw", "/api/v1/namespaces/bad/pods", "-f", cm)
		expectFail(t, r, `(BadRequest)`, `ConfigMap in version "v1" cannot be handled as a Pod`)
		m.expectNotFound(t, v, "cm", "e2e-mismatch", "-n", "bad")
		m.expectNotFound(t, v, "pod", "e2e-mismatch", "-n", "bad")
		pvc := m.writeFile(t, "pvc.json", `{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"e2e-mismatch"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}`)
		r = m.kubectl(t, v, "create", "--raw", "/api/v1/persistentvolumes", "-f", pvc)
		expectFail(t, r, `(BadRequest)`, `PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolume`)
		m.expectNotFound(t, v, "pv", "e2e-mismatch")
		// an apiVersion the URL does not serve
		sc := m.writeFile(t, "sc.json", `{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"e2e-mismatch"},"provisioner":"x.example.com"}`)
		r = m.kubectl(t, v, "create", "--raw", "/apis/apps/v1/namespaces/bad/statefulsets", "-f", sc)
		expectFail(t, r, `(BadRequest)`)
		m.expectNotFound(t, v, "sc", "e2e-mismatch")
		// the body's namespace differs from the URL's
		other := m.writeFile(t, "cm-other.json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"e2e-ns","namespace":"default"},"data":{"a":"b"}}`)
		r = m.kubectl(t, v, "create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", other)
		expectFail(t, r, `(BadRequest)`, `the namespace of the provided object does not match the namespace sent on the request`)
		m.expectNotFound(t, v, "cm", "e2e-ns", "-n", "bad")
		m.expectNotFound(t, v, "cm", "e2e-ns", "-n", "default")
	})

	t.Run("immutable-fields", func(t *testing.T) {
		m.mustKubectl(t, v, "apply", "-f", testdata("seed000-standard.yaml"))
		sc := seed("seed000-standard.yaml")
		f := m.writeFile(t, "sc-provisioner.yaml", strings.Replace(sc, "kubernetes.io/aws-ebs", "ebs.csi.aws.com", 1))
		r := m.kubectl(t, v, "apply", "-f", f)
		expectFail(t, r, `The StorageClass "standard" is invalid: provisioner: Forbidden: updates to provisioner are forbidden.`)
		f = m.writeFile(t, "sc-params.yaml", strings.Replace(sc, "type: gp2", "type: gp3", 1))
		r = m.kubectl(t, v, "apply", "-f", f)
		expectFail(t, r, `The StorageClass "standard" is invalid: parameters: Forbidden: updates to parameters are forbidden.`)
		f = m.writeFile(t, "sc-binding.yaml", sc+"volumeBindingMode: WaitForFirstConsumer\n")
		r = m.kubectl(t, v, "apply", "-f", f)
		expectFail(t, r, `The StorageClass "standard" is invalid: volumeBindingMode: Invalid value: "WaitForFirstConsumer": field is immutable`)
		f = m.writeFile(t, "sc-reclaim.yaml", sc+"reclaimPolicy: Retain\n")
		r = m.kubectl(t, v, "apply", "-f", f)
		expectFail(t, r, `The StorageClass "standard" is invalid: reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.`)
		var got storagev1.StorageClass
		m.getJSON(t, v, &got, "sc", "standard")
		if got.Provisioner != "kubernetes.io/aws-ebs" || got.Parameters["type"] != "gp2" || *got.VolumeBindingMode != storagev1.VolumeBindingImmediate || *got.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("a rejected update changed the StorageClass: %+v", got)
		}
		// allowVolumeExpansion and labels may change
		expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "sc-expand.yaml", sc+"allowVolumeExpansion: true\n")), "storageclass.storage.k8s.io/standard configured")

		// a PVC's spec is immutable once created (except requests of bound claims)
		m.mustKubectl(t, v, "apply", "-n", "bad", "-f", testdata("seed001-task-pv-claim.yaml"))
		var before corev1.PersistentVolumeClaim
		m.getJSON(t, v, &before, "pvc", "task-pv-claim", "-n", "bad")
		f = m.writeFile(t, "pvc-modes.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "- ReadWriteOnce", "- ReadWriteMany", 1))
		r = m.kubectl(t, v, "apply", "-n", "bad", "-f", f)
		expectFail(t, r, `The PersistentVolumeClaim "task-pv-claim" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests`)
		f = m.writeFile(t, "pvc-class.yaml", strings.Replace(seed("seed001-task-pv-claim.yaml"), "storageClassName: manual", "storageClassName: fast", 1))
		expectFail(t, m.kubectl(t, v, "apply", "-n", "bad", "-f", f), `spec: Forbidden: spec is immutable after creation`)
		// an unbound claim cannot be resized either
		expectFail(t, m.kubectl(t, v, "patch", "pvc", "task-pv-claim", "-n", "bad", "-p", `{"spec":{"resources":{"requests":{"storage":"5Gi"}}}}`),
			`spec: Forbidden: spec is immutable after creation`)
		var after corev1.PersistentVolumeClaim
		m.getJSON(t, v, &after, "pvc", "task-pv-claim", "-n", "bad")
		if after.ResourceVersion != before.ResourceVersion || after.Spec.AccessModes[0] != corev1.ReadWriteOnce || *after.Spec.StorageClassName != "manual" {
			t.Errorf("a rejected update changed the PVC: %+v", after.Spec)
		}
		// a PV's source is immutable
		m.mustKubectl(t, v, "apply", "-f", testdata("seed001-task-pv-volume.yaml"))
		f = m.writeFile(t, "pv-path.yaml", strings.Replace(seed("seed001-task-pv-volume.yaml"), `path: "/mnt/data"`, `path: "/mnt/other"`, 1))
		expectFail(t, m.kubectl(t, v, "apply", "-f", f), `The PersistentVolume "task-pv-volume" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation`)

		// a StatefulSet's selector (and serviceName, volumeClaimTemplates) are immutable
		m.mustKubectl(t, v, "apply", "-n", "bad", "-f", testdata("seed002-web.yaml"))
		var stsBefore appsv1.StatefulSet
		m.getJSON(t, v, &stsBefore, "sts", "web", "-n", "bad")
		web := seed("seed002-web.yaml")
		f = m.writeFile(t, "sts-selector.yaml", strings.ReplaceAll(web, "app: nginx", "app: nginx-v2"))
		r = m.kubectl(t, v, "apply", "-n", "bad", "-f", f)
		// (1.33 may or may not list 'revisionHistoryLimit' among the mutable fields: check around it)
		stsForbidden := []string{`The StatefulSet "web" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', `,
			`'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden`}
		expectFail(t, r, stsForbidden...)
		f = m.writeFile(t, "sts-vct.yaml", strings.Replace(web, "storage: 10Mi", "storage: 20Mi", 1))
		expectFail(t, m.kubectl(t, v, "apply", "-n", "bad", "-f", f), stsForbidden...)
		f = m.writeFile(t, "sts-svc.yaml", strings.Replace(web, "serviceName: nginx", "serviceName: other", 1))
		expectFail(t, m.kubectl(t, v, "apply", "-n", "bad", "-f", f), stsForbidden...)
		var stsAfter appsv1.StatefulSet
		m.getJSON(t, v, &stsAfter, "sts", "web", "-n", "bad")
		if stsAfter.ResourceVersion != stsBefore.ResourceVersion || stsAfter.Spec.Selector.MatchLabels["app"] != "nginx" {
			t.Errorf("a rejected update changed the StatefulSet: rv %s→%s selector %v", stsBefore.ResourceVersion, stsAfter.ResourceVersion, stsAfter.Spec.Selector)
		}
		// but replicas, template and updateStrategy may change
		f = m.writeFile(t, "sts-ok.yaml", strings.Replace(strings.Replace(web, "replicas: 2", "replicas: 4", 1), "nginx-slim:0.8", "nginx-slim:0.9", 1))
		expectOK(t, m.kubectl(t, v, "apply", "-n", "bad", "-f", f), "statefulset.apps/web configured")
		// a namespace's name cannot change through an update
		raw := m.mustKubectl(t, v, "get", "namespace", "bad", "-o", "json")
		var ns map[string]any
		_ = json.Unmarshal([]byte(raw), &ns)
		ns["metadata"].(map[string]any)["name"] = "renamed"
		b, _ := json.Marshal(ns)
		r = m.kubectl(t, v, "replace", "--raw", "/api/v1/namespaces/bad", "-f", m.writeFile(t, "ns-rename.json", string(b)))
		expectFail(t, r, `(BadRequest)`, `the name of the object (renamed) does not match the name on the URL (bad)`)
		m.expectNotFound(t, v, "namespace", "renamed")
	})
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
