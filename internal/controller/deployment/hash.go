package deployment

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/rand"
)

// ComputeHash is upstream's pod-template-hash: FNV-1a (32 bits) of the
// template as printed by the apimachinery dump for hashing (every field,
// map keys sorted, pointers followed), then of the collision count as 8
// little-endian bytes if it is set, the decimal number encoded with
// SafeEncodeString (no vowels, so no words). The same template gives the
// same ReplicaSet name on every Kubernetes of the same API types.
func ComputeHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}
