package e2e

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// seedObject is one manifest of testdata/, as extracted from the seeds
// (/work/shared/seeds/*.txt). Namespaced objects go into the namespace named
// after their seed (seed000, seed001, seed002: the seeds reuse names such as
// nginx and web), except those whose manifest names a namespace itself.
type seedObject struct {
	File     string // testdata/<File>
	Seed     string // seed000 … seed004
	Resource string // kubectl's type name, as printed by apply: persistentvolume, statefulset.apps…
	Name     string
	// Namespace is "" for cluster-scoped objects; FixedNS marks a manifest
	// that carries its own metadata.namespace (applied without -n).
	Namespace string
	FixedNS   bool
	// ApplyWarnings are the warnings upstream's API server returns when the
	// object is created (printed by kubectl as "Warning: …").
	ApplyWarnings []string
	// Reconfigured marks manifests that upstream's kubectl apply reports as
	// "configured" (not "unchanged") every time it re-applies them: the
	// three-way patch re-sends a field the server omits or fills in —
	// readOnly: false (omitempty) in block-pv, and every StatefulSet's
	// volumeClaimTemplates, a list without a merge key whose live copy
	// carries defaults (kubernetes/kubernetes#66450).
	Reconfigured bool
}

const (
	warnRecycle  = `Warning: spec.persistentVolumeReclaimPolicy: The Recycle reclaim policy is deprecated. Instead, the recommended approach is to use dynamic provisioning.`
	warnBetaSC   = `Warning: metadata.annotations[volume.beta.kubernetes.io/storage-class]: deprecated since v1.8; use "storageClassName" attribute instead`
	pvResource   = "persistentvolume"
	pvcResource  = "persistentvolumeclaim"
	scResource   = "storageclass.storage.k8s.io"
	stsResource  = "statefulset.apps"
	svcResource  = "service"
	cmResource   = "configmap"
	secResource  = "secret"
	seedDefaultN = "default"
)

// seedObjects lists every valid manifest in testdata/ (TestSeedCatalog keeps
// it in step with the directory).
var seedObjects = []seedObject{
	{File: "seed000-azure-file-secret.yaml", Seed: "seed000", Resource: secResource, Name: "azure-file-secret", Namespace: "seed000"},
	{File: "seed000-block-pv.yaml", Seed: "seed000", Resource: pvResource, Name: "block-pv", Reconfigured: true},
	{File: "seed000-block-pvc.yaml", Seed: "seed000", Resource: pvcResource, Name: "block-pvc", Namespace: "seed000"},
	{File: "seed000-cassandra.yaml", Seed: "seed000", Resource: svcResource, Name: "cassandra", Namespace: "seed000"},
	{File: "seed000-ceph-secret.yaml", Seed: "seed000", Resource: secResource, Name: "ceph-secret", Namespace: "seed000"},
	{File: "seed000-db-config.yaml", Seed: "seed000", Resource: cmResource, Name: "db-config", Namespace: seedDefaultN, FixedNS: true},
	{File: "seed000-efs.yaml", Seed: "seed000", Resource: pvcResource, Name: "efs", Namespace: "seed000", ApplyWarnings: []string{warnBetaSC}},
	{File: "seed000-example-pv.yaml", Seed: "seed000", Resource: pvResource, Name: "example-pv"},
	{File: "seed000-nginx.yaml", Seed: "seed000", Resource: svcResource, Name: "nginx", Namespace: "seed000"},
	{File: "seed000-persistent-volume-1.yaml", Seed: "seed000", Resource: pvResource, Name: "persistent-volume-1"},
	{File: "seed000-persistent-volume-claim.yaml", Seed: "seed000", Resource: pvcResource, Name: "persistent-volume-claim", Namespace: "seed000"},
	{File: "seed000-pv-1.yaml", Seed: "seed000", Resource: pvResource, Name: "pv-1", ApplyWarnings: []string{warnRecycle}},
	{File: "seed000-standard.yaml", Seed: "seed000", Resource: scResource, Name: "standard"},
	{File: "seed000-storage-claim.yaml", Seed: "seed000", Resource: pvcResource, Name: "storage-claim", Namespace: "seed000"},
	{File: "seed000-web.yaml", Seed: "seed000", Resource: stsResource, Name: "web", Namespace: "seed000", Reconfigured: true},
	{File: "seed001-glusterfs-storage.yaml", Seed: "seed001", Resource: scResource, Name: "glusterfs-storage"},
	{File: "seed001-mysql-configmap.yaml", Seed: "seed001", Resource: cmResource, Name: "mysql", Namespace: "seed001"},
	{File: "seed001-mysql-read.yaml", Seed: "seed001", Resource: svcResource, Name: "mysql-read", Namespace: "seed001"},
	{File: "seed001-mysql-service.yaml", Seed: "seed001", Resource: svcResource, Name: "mysql", Namespace: "seed001"},
	{File: "seed001-mysql-statefulset.yaml", Seed: "seed001", Resource: stsResource, Name: "mysql", Namespace: "seed001", Reconfigured: true},
	{File: "seed001-task-pv-claim.yaml", Seed: "seed001", Resource: pvcResource, Name: "task-pv-claim", Namespace: "seed001"},
	{File: "seed001-task-pv-volume.yaml", Seed: "seed001", Resource: pvResource, Name: "task-pv-volume"},
	{File: "seed002-local-pv1.yaml", Seed: "seed002", Resource: pvResource, Name: "local-pv1"},
	{File: "seed002-local-pv2.yaml", Seed: "seed002", Resource: pvResource, Name: "local-pv2"},
	{File: "seed002-local-storage.yaml", Seed: "seed002", Resource: scResource, Name: "local-storage"},
	{File: "seed002-myclaim.yaml", Seed: "seed002", Resource: pvcResource, Name: "myclaim", Namespace: "seed002"},
	{File: "seed002-nginx.yaml", Seed: "seed002", Resource: svcResource, Name: "nginx", Namespace: "seed002"},
	{File: "seed002-pv0003.yaml", Seed: "seed002", Resource: pvResource, Name: "pv0003", ApplyWarnings: []string{warnRecycle}},
	{File: "seed002-web.yaml", Seed: "seed002", Resource: stsResource, Name: "web", Namespace: "seed002", Reconfigured: true},
	{File: "seed004-fast.yaml", Seed: "seed004", Resource: scResource, Name: "fast"},
}

// seedNamespaces are the namespaces the seeds' namespaced objects live in.
var seedNamespaces = []string{"seed000", "seed001", "seed002"}

// Ref is how kubectl names the object in apply/create/delete output.
func (o seedObject) Ref() string { return o.Resource + "/" + o.Name }

// kind is the short type for kubectl get (persistentvolume, storageclass…).
func (o seedObject) getArgs() []string {
	args := []string{o.Resource, o.Name}
	if o.Namespace != "" {
		args = append(args, "-n", o.Namespace)
	}
	return args
}

// applyGroups groups the seed files into kubectl invocations: one per seed
// (namespaced objects into the seed's namespace), and one per manifest that
// carries its own namespace.
func applyGroups() [][]seedObject {
	bySeed := map[string][]seedObject{}
	var fixed [][]seedObject
	for _, o := range seedObjects {
		if o.FixedNS {
			fixed = append(fixed, []seedObject{o})
			continue
		}
		bySeed[o.Seed] = append(bySeed[o.Seed], o)
	}
	var seeds []string
	for s := range bySeed {
		seeds = append(seeds, s)
	}
	sort.Strings(seeds)
	var groups [][]seedObject
	for _, s := range seeds {
		groups = append(groups, bySeed[s])
	}
	return append(groups, fixed...)
}

// groupArgs is the -n/-f part of a kubectl command for a group.
func groupArgs(g []seedObject) []string {
	var args []string
	if !g[0].FixedNS {
		if ns := seedNamespaceOf(g[0].Seed); ns != "" {
			args = append(args, "-n", ns)
		}
	}
	for _, o := range g {
		args = append(args, "-f", testdata(o.File))
	}
	return args
}

func seedNamespaceOf(seed string) string {
	for _, ns := range seedNamespaces {
		if ns == seed {
			return ns
		}
	}
	return "" // seed004 has only a cluster-scoped StorageClass
}

// TestSeedCatalog checks that testdata/ holds exactly the manifests listed
// in seedObjects and that each one starts with a comment naming its seed.
func TestSeedCatalog(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	listed := map[string]bool{}
	for _, o := range seedObjects {
		listed[o.File] = true
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	broken, _ := filepath.Glob(filepath.Join("testdata", "broken", "*.yaml"))
	if len(files) == 0 || len(broken) == 0 {
		t.Fatalf("no manifests in testdata/ (%d) or testdata/broken/ (%d)", len(files), len(broken))
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not listed in seedObjects", f)
		}
		delete(listed, filepath.Base(f))
	}
	for f := range listed {
		t.Errorf("seedObjects lists %s, which is not in testdata/", f)
	}
	for _, f := range append(files, broken...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if !strings.HasPrefix(first, "# From seed 00") {
			t.Errorf("%s: the first line should say which seed it comes from, got %q", f, first)
		}
	}
}
