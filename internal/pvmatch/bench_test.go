package pvmatch

import (
	"fmt"
	"math/rand"
	"sort"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/component-helpers/storage/volume"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1000}, {"10k", 10000}, {"100k", 100000}}

type fleet struct {
	vols   []*corev1.PersistentVolume
	claims []*corev1.PersistentVolumeClaim
	ix     *Index
}

var (
	fleetMu sync.Mutex
	fleets  = map[int]*fleet{}
)

// benchFleet is a cluster-like set of n volumes: two classes, mostly RWO,
// capacities 1..1000Gi, a tenth bound, some zonal; and 64 gold RWO claims.
func benchFleet(n int) *fleet {
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if f := fleets[n]; f != nil {
		return f
	}
	r := rand.New(rand.NewSource(1))
	f := &fleet{ix: NewIndex()}
	modeSets := [][]corev1.PersistentVolumeAccessMode{{RWO}, {RWO}, {RWO}, {RWO}, {RWO}, {RWO}, {RWO, ROX}, {RWO, ROX}, {RWX}, {RWOP}}
	for i := 0; i < n; i++ {
		b := newPV(fmt.Sprintf("pv-%06d", i)).class([]string{"gold", "gold", "silver"}[r.Intn(3)]).
			cap(fmt.Sprintf("%dGi", 1+r.Intn(1000))).labels("tier", []string{"ssd", "hdd"}[r.Intn(2)])
		b.pv.Spec.AccessModes = modeSets[r.Intn(len(modeSets))]
		if r.Intn(10) == 0 {
			b.claimRef("ns", fmt.Sprintf("bound-%d", i), "u").phase(corev1.VolumeBound)
		}
		if r.Intn(3) == 0 {
			b.affinity("zone", corev1.NodeSelectorOpIn, []string{"z1", "z2", "z3"}[r.Intn(3)])
		}
		f.vols = append(f.vols, b.pv)
		f.ix.Upsert(b.pv)
	}
	for i := 0; i < 64; i++ {
		f.claims = append(f.claims, newPVC(fmt.Sprintf("c%d", i)).class("gold").req(fmt.Sprintf("%dGi", 1+r.Intn(1000))).c)
	}
	return f
}

func BenchmarkFind(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.ix.Find(f.claims[i%len(f.claims)], Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUpstreamFindMatchingVolume runs upstream's findByClaim over the
// same volumes: buckets by access-mode key, fewest modes first,
// FindMatchingVolume on each until one matches. The buckets are built once
// (upstream's indexer copies each bucket into a new slice per call), which
// favours upstream.
func BenchmarkUpstreamFindMatchingVolume(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			buckets := map[string][]*corev1.PersistentVolume{}
			for _, v := range f.vols {
				k := upstreamModesKey(v.Spec.AccessModes)
				buckets[k] = append(buckets[k], v)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				claim := f.claims[i%len(f.claims)]
				var keys [][]corev1.PersistentVolumeAccessMode
				for k := range buckets {
					if m := upstreamModesFromKey(k); containsAllModes(m, claim.Spec.AccessModes) {
						keys = append(keys, m)
					}
				}
				sort.Slice(keys, func(i, j int) bool { return len(keys[i]) < len(keys[j]) })
				for _, m := range keys {
					pv, err := volume.FindMatchingVolume(claim, buckets[upstreamModesKey(m)], nil, nil, false, false)
					if err != nil {
						b.Fatal(err)
					}
					if pv != nil {
						break
					}
				}
			}
		})
	}
}

// BenchmarkFindScheduler is the WaitForFirstConsumer path: node affinity is
// evaluated while walking up from the lower bound.
func BenchmarkFindScheduler(b *testing.B) {
	n1 := node("n1", "zone", "z1")
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f.ix.Find(f.claims[i%len(f.claims)], Options{Node: n1, DelayBinding: true})
			}
		})
	}
}

// BenchmarkFindSelective: a selector no volume matches makes Find walk every
// volume of the bucket from the lower bound up (the documented worst case).
func BenchmarkFindSelective(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			claims := make([]*corev1.PersistentVolumeClaim, len(f.claims))
			for i, c := range f.claims {
				c = c.DeepCopy()
				c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("1Gi")
				(&pvcB{c}).matchLabels("tier", "nvme")
				claims[i] = c
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f.ix.Find(claims[i%len(claims)], Options{})
			}
		})
	}
}

// BenchmarkUpsert replaces a volume (remove and insert: the sorted-slice
// memmove) in an index of n volumes.
func BenchmarkUpsert(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			ix := NewIndex()
			for _, v := range f.vols {
				ix.Upsert(v)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ix.Upsert(f.vols[(i*7919)%len(f.vols)])
			}
		})
	}
}

// BenchmarkUpsertOneBucket: every volume in one class and access-mode set,
// the worst case for the sorted buckets.
func BenchmarkUpsertOneBucket(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			vols := make([]*corev1.PersistentVolume, len(f.vols))
			ix := NewIndex()
			for i, v := range f.vols {
				v = v.DeepCopy()
				v.Spec.StorageClassName, v.Spec.AccessModes, v.Spec.ClaimRef = "gold", []corev1.PersistentVolumeAccessMode{RWO}, nil
				v.Status.Phase = corev1.VolumeAvailable
				vols[i] = v
				ix.Upsert(v)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ix.Upsert(vols[(i*7919)%len(vols)])
			}
		})
	}
}

// BenchmarkLoad builds an index of n volumes from scratch, in informer
// (random capacity) order.
func BenchmarkLoad(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("volumes="+s.name, func(b *testing.B) {
			f := benchFleet(s.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ix := NewIndex()
				for _, v := range f.vols {
					ix.Upsert(v)
				}
			}
		})
	}
}
