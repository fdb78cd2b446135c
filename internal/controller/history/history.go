// Package history holds what the StatefulSet and DaemonSet controllers share
// about ControllerRevisions, as upstream's pkg/controller/history and
// controller.ComputeHash: the revision data (a strategic-merge patch that
// replaces spec.template), the two hashes that name revisions, ordering and
// equality, creating a revision with collision handling, renumbering,
// pruning old revisions, and the ownership rules (upstream's
// ControllerRefManager) by which both controllers adopt and release pods and
// revisions.
package history

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/rand"
)

// HashLabel holds the hash of a StatefulSet revision's data.
const HashLabel = "controller.kubernetes.io/hash"

// maxPrefix keeps a revision name within 253 bytes.
const maxPrefix = 223

// Name is a revision's name: the owner's name (cut to 223 bytes), a dash,
// the hash.
func Name(owner, hash string) string {
	if len(owner) > maxPrefix {
		owner = owner[:maxPrefix]
	}
	return owner + "-" + hash
}

// HashData is the StatefulSet revision hash: FNV-32 of the data, then of
// the decimal probe (the collision count) if any, as a safe-encoded string.
func HashData(data []byte, probe *int32) string {
	h := fnv.New32()
	h.Write(data)
	if probe != nil {
		h.Write([]byte(strconv.FormatInt(int64(*probe), 10)))
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// HashTemplate is the DaemonSet (and ReplicaSet) template hash: FNV-32a of
// the template's spew dump, then of the collision count as four
// little-endian bytes padded to eight, safe-encoded.
func HashTemplate(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// TemplatePatch is a revision's data: from an object decoded into a map,
// {"spec":{"template":{...,"$patch":"replace"}}} with keys sorted, so that
// applying it as a strategic-merge patch restores the template exactly.
func TemplatePatch(object map[string]any) ([]byte, error) {
	spec, ok := object["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("object has no spec")
	}
	template, ok := spec["template"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("object has no spec.template")
	}
	template["$patch"] = "replace"
	return json.Marshal(map[string]any{"spec": map[string]any{"template": template}})
}

// Sort orders revisions by revision number, then creation time, then name.
func Sort(revisions []*appsv1.ControllerRevision) {
	sort.SliceStable(revisions, func(i, j int) bool {
		a, b := revisions[i], revisions[j]
		if a.Revision != b.Revision {
			return a.Revision < b.Revision
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
}

// Equal says whether two revisions hold the same data: their hash labels,
// when both parse as numbers, must agree, and the data must be equal.
func Equal(a, b *appsv1.ControllerRevision) bool {
	if a == nil || b == nil {
		return a == b
	}
	ha, okA := numericHash(a)
	hb, okB := numericHash(b)
	if okA && okB && ha != hb {
		return false
	}
	return bytes.Equal(a.Data.Raw, b.Data.Raw) && equality.Semantic.DeepEqual(a.Data.Object, b.Data.Object)
}

func numericHash(r *appsv1.ControllerRevision) (uint32, bool) {
	s, ok := r.Labels[HashLabel]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 32)
	return uint32(n), err == nil
}

// FindEqual returns the revisions equal to needle, in their order.
func FindEqual(revisions []*appsv1.ControllerRevision, needle *appsv1.ControllerRevision) []*appsv1.ControllerRevision {
	var out []*appsv1.ControllerRevision
	for _, r := range revisions {
		if Equal(r, needle) {
			out = append(out, r)
		}
	}
	return out
}

// Prunable returns, oldest first, the revisions for which live is false
// beyond the newest keep of them: what to delete to trim a history.
func Prunable(revisions []*appsv1.ControllerRevision, keep int, live func(*appsv1.ControllerRevision) bool) []*appsv1.ControllerRevision {
	sorted := append([]*appsv1.ControllerRevision(nil), revisions...)
	Sort(sorted)
	var dead []*appsv1.ControllerRevision
	for _, r := range sorted {
		if !live(r) {
			dead = append(dead, r)
		}
	}
	if excess := len(dead) - max(keep, 0); excess > 0 {
		return dead[:excess]
	}
	return nil
}
