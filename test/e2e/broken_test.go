package e2e

import (
	"strings"
	"testing"
)

// brokenSeed is a manifest kept as the seed wrote it (testdata/broken/), and
// what upstream Kubernetes answers to it.
type brokenSeed struct {
	File      string
	Resource  string // for the NotFound check
	Name      string
	Namespace string
	// Errors are substrings of kubectl's stderr, the same for create -f and
	// apply -f (where the name of the operation differs, the common part).
	Errors []string
	// CreateOnlyErrors appear for create -f only: kubectl apply drops the
	// manifest's null-valued keys (requests:) before it sends the object.
	CreateOnlyErrors []string
}

var brokenSeeds = []brokenSeed{
	{
		// The alpha node-affinity annotation was removed long ago; a local PV
		// needs spec.nodeAffinity.
		File: "seed000-example-pv.yaml", Resource: "pv", Name: "example-pv",
		Errors: []string{`The PersistentVolume "example-pv" is invalid: spec.nodeAffinity: Required value: Local volume requires node affinity`},
	},
	{
		File: "seed002-example-pv.yaml", Resource: "pv", Name: "example-pv",
		Errors: []string{`The PersistentVolume "example-pv" is invalid: spec.nodeAffinity: Required value: Local volume requires node affinity`},
	},
	{
		// kubectl itself cannot parse it: nothing reaches the server.
		File: "seed000-pv-1.yaml", Resource: "pv", Name: "pv-1",
		Errors: []string{`error: error parsing ` + testdata("broken/seed000-pv-1.yaml") + `: error converting YAML to JSON: yaml: line 14: did not find expected key`},
	},
	{
		// Flattened indentation: StorageClassName (sic), storage and path all
		// land directly under spec. Strict field validation names them.
		File: "seed000-persistent-volume-1.yaml", Resource: "pv", Name: "persistent-volume-1",
		Errors: []string{`(BadRequest)`, `PersistentVolume in version "v1" cannot be handled as a PersistentVolume: strict decoding error: `,
			`unknown field "spec.StorageClassName"`, `unknown field "spec.path"`, `unknown field "spec.storage"`},
	},
	{
		File: "seed000-persistent-volume-1-typo.yaml", Resource: "pv", Name: "persistent-volume-1",
		Errors: []string{`(BadRequest)`, `PersistentVolume in version "v1" cannot be handled as a PersistentVolume: strict decoding error: unknown field "spec.StorageClassName"`},
	},
	{
		File: "seed000-persistent-volume-claim.yaml", Resource: "pvc", Name: "persistent-volume-claim", Namespace: "broken",
		Errors: []string{`(BadRequest)`, `PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: strict decoding error: `,
			`unknown field "spec.storage"`},
		CreateOnlyErrors: []string{`unknown field "spec.requests"`},
	},
	{
		File: "seed000-efs.yaml", Resource: "pvc", Name: "efs", Namespace: "broken",
		Errors: []string{`(BadRequest)`, `PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: strict decoding error: `,
			`unknown field "metadata.volume.beta.kubernetes.io/storage-class"`, `unknown field "spec.storage"`},
		CreateOnlyErrors: []string{`unknown field "spec.requests"`},
	},
	{
		// "<base64 encoded account name>" is not base64.
		File: "seed000-azure-file-secret.yaml", Resource: "secret", Name: "azure-file-secret", Namespace: "broken",
		Errors: []string{`(BadRequest)`, `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0`},
	},
	{
		// Decoding stops at the first bad value, the 1Gib quantity; upstream's
		// message does not name the field.
		File: "seed000-web.yaml", Resource: "sts", Name: "web", Namespace: "broken",
		Errors: []string{`(BadRequest)`, `StatefulSet in version "v1" cannot be handled as a StatefulSet: `,
			`quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`},
	},
	{
		// storage.k8s.io/v1beta1 StorageClass was removed in 1.22.
		File: "seed001-glusterfs-storage.yaml", Resource: "sc", Name: "glusterfs-storage",
		Errors: []string{`resource mapping not found for name: "glusterfs-storage" namespace: "" from "` + testdata("broken/seed001-glusterfs-storage.yaml") + `": no matches for kind "StorageClass" in version "storage.k8s.io/v1beta1"`,
			`ensure CRDs are installed first`},
	},
	{
		// host-path is not a field: strict field validation (kubectl's
		// default) names it; the volume then has no source either.
		File: "seed000-hue-coupon-hunter.yaml", Resource: "pod", Name: "hue-coupon-hunter", Namespace: "broken",
		Errors: []string{`(BadRequest)`, `unknown field "spec.volumes[0].host-path"`},
	},
	{
		File: "seed004-fast.yaml", Resource: "sc", Name: "fast",
		Errors: []string{`error: error parsing ` + testdata("broken/seed004-fast.yaml") + `: error converting YAML to JSON: yaml: line 3: mapping values are not allowed in this context`},
	},
}

// TestSeedBrokenManifests feeds the seeds' broken manifests, as written, to
// kubectl create and kubectl apply: each must fail with a message naming
// what is wrong, and leave nothing behind.
func TestSeedBrokenManifests(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.mustKubectl(t, v, "create", "namespace", "broken")
	for _, b := range brokenSeeds {
		b := b
		t.Run(strings.TrimSuffix(b.File, ".yaml"), func(t *testing.T) {
			for _, verb := range []string{"create", "apply"} {
				args := []string{verb, "-f", testdata("broken/" + b.File)}
				if b.Namespace != "" {
					args = append(args, "-n", b.Namespace)
				}
				r := m.kubectl(t, v, args...)
				expectFail(t, r, b.Errors...)
				if verb == "create" {
					expectFail(t, r, b.CreateOnlyErrors...)
				}
				get := []string{b.Resource, b.Name}
				if b.Namespace != "" {
					get = append(get, "-n", b.Namespace)
				}
				m.expectNotFound(t, v, get...)
			}
		})
	}
}
