package provisioner

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
)

func TestParseClassParams(t *testing.T) {
	p, err := parseClassParams(map[string]string{
		"csi.storage.k8s.io/fstype":                      "ext4",
		"type":                                           "ssd",
		"csiProvisionerSecretName":                       "old",
		"csiProvisionerSecretNamespace":                  "ns",
		"csi.storage.k8s.io/secret-name":                 "default-secret",
		"csi.storage.k8s.io/secret-namespace":            "${pvc.namespace}",
		"csi.storage.k8s.io/node-stage-secret-name":      "stage",
		"csi.storage.k8s.io/node-stage-secret-namespace": "kube-system",
	})
	if err != nil {
		t.Fatal(err)
	}
	// Deprecated unprefixed keys are passed through, as upstream.
	if p.fsType != "ext4" || !reflect.DeepEqual(p.driver, map[string]string{"type": "ssd", "csiProvisionerSecretName": "old", "csiProvisionerSecretNamespace": "ns"}) {
		t.Errorf("parsed = %+v", p)
	}
	if got := p.secrets[secretProvisioner]; got != (secretTemplate{"old", "ns"}) {
		t.Errorf("provisioner secret = %+v", got)
	}
	if got := p.secrets[secretNodeStage]; got != (secretTemplate{"stage", "kube-system"}) {
		t.Errorf("node-stage secret = %+v", got)
	}
	if got := p.secrets[secretNodePublish]; got != (secretTemplate{"default-secret", "${pvc.namespace}"}) {
		t.Errorf("node-publish secret falls back to the default: %+v", got)
	}

	for _, tc := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"fstype": "xfs", "csi.storage.k8s.io/fstype": "ext4"},
			`fstype specified in parameters with both "fstype" and "csi.storage.k8s.io/fstype" keys`},
		{map[string]string{"csi.storage.k8s.io/fsType": "xfs"},
			`failed to strip CSI Parameters of prefixed keys: found unknown parameter key "csi.storage.k8s.io/fsType" with reserved namespace csi.storage.k8s.io/`},
		{map[string]string{"csi.storage.k8s.io/provisioner-secret-name": "x"},
			`failed to get name and namespace template from params: either name and namespace for Provisioner secrets specified, Both must be specified`},
		{map[string]string{"csiNodeStageSecretName": "a", "csiNodeStageSecretNamespace": "b", "csi.storage.k8s.io/node-stage-secret-name": "c", "csi.storage.k8s.io/node-stage-secret-namespace": "d"},
			`failed to get name and namespace template from params: NodeStage secrets specified in parameters with both "csi" and "csi.storage.k8s.io/" keys`},
	} {
		if _, err := parseClassParams(tc.params); err == nil || err.Error() != tc.want {
			t.Errorf("parseClassParams(%v) = %v, want %q", tc.params, err, tc.want)
		}
	}
}

func TestSecretTemplateResolve(t *testing.T) {
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "team-a",
		Annotations: map[string]string{"example.com/secret": "team-secret"}}}
	ref, err := secretTemplate{name: "${pvc.annotations['example.com/secret']}", namespace: "${pvc.namespace}"}.resolve("pvc-1", claim)
	if err != nil || ref.Name != "team-secret" || ref.Namespace != "team-a" {
		t.Errorf("resolve = %+v, %v", ref, err)
	}
	// The claim's name may not choose the namespace.
	if _, err := (secretTemplate{name: "x", namespace: "${pvc.name}"}).resolve("pvc-1", claim); err == nil ||
		err.Error() != `error resolving value "${pvc.name}": invalid tokens: ["pvc.name"]` {
		t.Errorf("namespace from pvc.name: %v", err)
	}
	if _, err := (secretTemplate{name: "${pvc.name}_x", namespace: "ns"}).resolve("pvc-1", claim); err == nil ||
		err.Error() != `"${pvc.name}_x" resolved to "data_x" which is not a valid secret name` {
		t.Errorf("bad name: %v", err)
	}
}

func TestRequisiteOffsetSpreadsStatefulSetClaims(t *testing.T) {
	// Upstream's offset: www-web-0 and www-web-1 hash "web" and add their
	// ordinals, so consecutive claims start at consecutive nodes.
	if nameOffset("www-web-1")-nameOffset("www-web-0") != 1 {
		t.Errorf("offsets %d, %d are not consecutive", nameOffset("www-web-0"), nameOffset("www-web-1"))
	}
	if got := flatten([]corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{
		{Key: "zone", Values: []string{"a", "b"}}, {Key: "rack", Values: []string{"1"}},
	}}}); len(got) != 2 || got[0].String() != "{rack=1,zone=a}" || got[1].String() != "{rack=1,zone=b}" {
		t.Errorf("flatten = %v", got)
	}
}

func TestRankIsDeterministic(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	firsts := map[string]int{}
	for i := range 200 {
		uid := "uid-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		ranks := map[int]bool{}
		for _, n := range nodes {
			r := rankOf(types.UID(uid), n, nodes)
			if r2 := rankOf(types.UID(uid), n, []string{"n4", "n3", "n2", "n1"}); r2 != r {
				t.Fatalf("rank of %s depends on the list order: %d, %d", n, r, r2)
			}
			ranks[r] = true
			if r == 0 {
				firsts[n]++
			}
		}
		if len(ranks) != len(nodes) {
			t.Fatalf("ranks for %s are not a permutation: %v", uid, ranks)
		}
	}
	for _, n := range nodes {
		if firsts[n] < 20 {
			t.Errorf("node %s is first for only %d of 200 claims: %v", n, firsts[n], firsts)
		}
	}
	if rankOf("u", "n9", nodes) != len(nodes) {
		t.Error("a node that is not a candidate must rank last")
	}
}

func TestJournalRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := intent{
		Request: csi.CreateVolumeRequest{Name: "pvc-1", RequiredBytes: 1 << 30, Secrets: map[string]string{"password": "x"},
			Capability: csi.VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, FSType: "ext4"},
			Preferred:  []csi.Topology{{"k": "v"}}},
		Claim:     claimID{"default", "data", "1"},
		SecretRef: &secretRef{"default", "creds"},
	}
	if err := j.put(rec); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pvc-1.json"))
	if len(b) == 0 || strings.Contains(string(b), "password") {
		t.Errorf("record on disk = %s; secrets must not be written", b)
	}
	j2, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := rec
	want.Request.Secrets = nil
	if got, ok := j2.get("pvc-1"); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("reopened record = %+v, want %+v", got, want)
	}
	if err := j2.remove("pvc-1"); err != nil || j2.has("pvc-1") {
		t.Fatalf("remove: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "pvc-2.json"), []byte("{"), 0o600)
	if _, err := openJournal(dir); err == nil {
		t.Error("a corrupt record must stop the start, not be forgotten")
	}
}
