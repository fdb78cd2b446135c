package pvmatch

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/component-helpers/storage/volume"
)

// This file is the reference: upstream's own FindMatchingVolume
// (k8s.io/component-helpers v0.33.13), driven the way upstream drives it.
// Only the small loops around it are restated here from upstream's source:
// the PV controller's findByClaim / allPossibleMatchingAccessModes
// (pkg/controller/volume/persistentvolume/index.go) and the scheduler's
// findMatchingVolumes (pkg/scheduler/framework/plugins/volumebinding/binder.go).

// upstreamModesKey is v1helper.GetAccessModesAsString: fixed order,
// duplicates and unknown modes dropped.
func upstreamModesKey(modes []corev1.PersistentVolumeAccessMode) string {
	var out []string
	for _, m := range []struct {
		mode  corev1.PersistentVolumeAccessMode
		short string
	}{{RWO, "RWO"}, {ROX, "ROX"}, {RWX, "RWX"}, {RWOP, "RWOP"}} {
		for _, have := range modes {
			if have == m.mode {
				out = append(out, m.short)
				break
			}
		}
	}
	return strings.Join(out, ",")
}

// upstreamModesFromKey is v1helper.GetAccessModesFromString.
func upstreamModesFromKey(key string) []corev1.PersistentVolumeAccessMode {
	out := []corev1.PersistentVolumeAccessMode{}
	for _, s := range strings.Split(key, ",") {
		switch strings.TrimSpace(s) {
		case "RWO":
			out = append(out, RWO)
		case "ROX":
			out = append(out, ROX)
		case "RWX":
			out = append(out, RWX)
		case "RWOP":
			out = append(out, RWOP)
		}
	}
	return out
}

func containsAllModes(indexed, requested []corev1.PersistentVolumeAccessMode) bool {
	return hasAllModes(indexed, requested)
}

func excludedMap(vols []*corev1.PersistentVolume, opts Options) map[string]*corev1.PersistentVolume {
	m := map[string]*corev1.PersistentVolume{}
	if opts.Exclude != nil {
		for _, v := range vols {
			if opts.Exclude(v.Name) {
				m[v.Name] = v
			}
		}
	}
	return m
}

// outcomesOfCall returns every volume name ("" for none) that one
// FindMatchingVolume call over list could return under some order of list.
// Its result depends on order only through which volume comes first among
// those pre-bound to the claim, or among the smallest fitting ones; so it is
// enough to try the given order and each volume that could matter moved to
// the front (one that matches alone, or one pre-bound to the claim).
func outcomesOfCall(claim *corev1.PersistentVolumeClaim, list []*corev1.PersistentVolume, node *corev1.Node,
	excluded map[string]*corev1.PersistentVolume, delay bool) (map[string]bool, error) {
	out := map[string]bool{}
	call := func(l []*corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
		pv, err := volume.FindMatchingVolume(claim, l, node, excluded, delay, false)
		if err != nil {
			return nil, err
		}
		if pv == nil {
			out[""] = true
		} else {
			out[pv.Name] = true
		}
		return pv, nil
	}
	if _, err := call(list); err != nil {
		return nil, err
	}
	for i, v := range list {
		alone, _ := volume.FindMatchingVolume(claim, list[i:i+1], node, excluded, delay, false)
		if alone == nil && !volume.IsVolumeBoundToClaim(v, claim) {
			continue
		}
		front := append([]*corev1.PersistentVolume{v}, list[:i]...)
		front = append(front, list[i+1:]...)
		call(front)
	}
	return out, nil
}

// upstreamOutcomes returns every answer upstream could give for claim over
// vols ("" = no volume), or upstream's error.
func upstreamOutcomes(claim *corev1.PersistentVolumeClaim, vols []*corev1.PersistentVolume, opts Options) (map[string]bool, error) {
	excluded := excludedMap(vols, opts)
	if opts.Node != nil {
		// Scheduler: FindMatchingVolume over PVAssumeCache.ListPVs(class),
		// with delayBinding=true.
		class := volume.GetPersistentVolumeClaimClass(claim)
		var list []*corev1.PersistentVolume
		for _, v := range vols {
			if volume.GetPersistentVolumeClass(v) == class {
				list = append(list, v)
			}
		}
		return outcomesOfCall(claim, list, opts.Node, excluded, true)
	}
	// PV controller: findByClaim.
	buckets := map[string][]*corev1.PersistentVolume{}
	for _, v := range vols {
		k := upstreamModesKey(v.Spec.AccessModes)
		buckets[k] = append(buckets[k], v)
	}
	byLevel := map[int][]string{}
	for k := range buckets {
		if modes := upstreamModesFromKey(k); containsAllModes(modes, claim.Spec.AccessModes) {
			byLevel[len(modes)] = append(byLevel[len(modes)], k)
		}
	}
	levels := make([]int, 0, len(byLevel))
	for l := range byLevel {
		levels = append(levels, l)
	}
	sort.Ints(levels)
	// Keys with the same number of modes come in map order: any of them may
	// be searched first, so any of their answers is possible.
	for _, l := range levels {
		found := map[string]bool{}
		for _, k := range byLevel[l] {
			outs, err := outcomesOfCall(claim, buckets[k], nil, excluded, opts.DelayBinding)
			if err != nil {
				return nil, err
			}
			for name := range outs {
				if name != "" {
					found[name] = true
				}
			}
		}
		if len(found) > 0 {
			return found, nil
		}
	}
	return map[string]bool{"": true}, nil
}

func setString(m map[string]bool) string {
	var s []string
	for k := range m {
		if k == "" {
			k = "<none>"
		}
		s = append(s, k)
	}
	sort.Strings(s)
	return "{" + strings.Join(s, " ") + "}"
}
