package provisioner

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/moorage/moorage/internal/csi"
)

// Topology follows kubernetes-csi/external-provisioner
// pkg/controller/topology.go (GenerateAccessibilityRequirements,
// GenerateVolumeNodeAffinity), without its per-claim caches.

// segment and term are a topology as a sorted list, so that terms compare.
type segment struct{ key, value string }
type term []segment

func termOf(t csi.Topology) term {
	out := make(term, 0, len(t))
	for k, v := range t {
		out = append(out, segment{k, v})
	}
	out.sort()
	return out
}

func (t term) sort() {
	slices.SortFunc(t, func(a, b segment) int {
		return cmp.Or(strings.Compare(a.key, b.key), strings.Compare(a.value, b.value))
	})
}

func (t term) compare(o term) int {
	if len(t) != len(o) {
		return len(t) - len(o)
	}
	for i := range t {
		if c := cmp.Or(strings.Compare(t[i].key, o[i].key), strings.Compare(t[i].value, o[i].value)); c != 0 {
			return c
		}
	}
	return 0
}

// within: every segment of t is in o (t is a less specific topology of o).
func (t term) within(o term) bool {
	for _, s := range t {
		if !slices.Contains(o, s) {
			return false
		}
	}
	return true
}

func (t term) topology() csi.Topology {
	out := csi.Topology{}
	for _, s := range t {
		out[s.key] = s.value
	}
	return out
}

func (t term) String() string {
	parts := make([]string, len(t))
	for i, s := range t {
		parts[i] = s.key + "=" + s.value
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// flatten expands a class's allowedTopologies into terms: each selector
// term is an AND of expressions, each expression an OR of values.
func flatten(allowed []corev1.TopologySelectorTerm) []term {
	var out []term
	for _, sel := range allowed {
		var terms []term
		for _, expr := range sel.MatchLabelExpressions {
			var next []term
			for _, v := range expr.Values {
				if len(terms) == 0 {
					next = append(next, term{{expr.Key, v}})
					continue
				}
				for _, old := range terms {
					next = append(next, append(slices.Clone(old), segment{expr.Key, v}))
				}
			}
			terms = next
		}
		out = append(out, terms...)
	}
	for _, t := range out {
		t.sort()
	}
	return out
}

// allows: a node with these labels satisfies allowedTopologies (none: any).
func allows(allowed []corev1.TopologySelectorTerm, nodeLabels map[string]string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, sel := range allowed {
		ok := true
		for _, expr := range sel.MatchLabelExpressions {
			v, has := nodeLabels[expr.Key]
			ok = ok && has && slices.Contains(expr.Values, v)
		}
		if ok {
			return true
		}
	}
	return false
}

// topologyKeys are the driver's topology keys on a node: those its CSINode
// object lists for the driver, else Options.TopologyKeys (until the agent
// writes CSINode objects).
func (c *Controller) topologyKeys(node string) []string {
	if cn, err := c.csiNodes.Get(node); err == nil {
		for _, d := range cn.Spec.Drivers {
			if d.Name == c.driver && len(d.TopologyKeys) > 0 {
				return d.TopologyKeys
			}
		}
	}
	return c.opts.TopologyKeys
}

// anyTopologyKeys are the keys of some node that has the driver, for
// claims that have no selected node.
func (c *Controller) anyTopologyKeys() []string {
	if all, err := c.csiNodes.List(labels.Everything()); err == nil {
		sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
		for _, cn := range all {
			for _, d := range cn.Spec.Drivers {
				if d.Name == c.driver && len(d.TopologyKeys) > 0 {
					return d.TopologyKeys
				}
			}
		}
	}
	return c.opts.TopologyKeys
}

// nodeTerm is a node's topology for keys; missing is true when the node
// lacks one of them.
func nodeTerm(node *corev1.Node, keys []string) (t term, missing bool) {
	for _, k := range keys {
		v, ok := node.Labels[k]
		if !ok {
			return nil, true
		}
		t = append(t, segment{k, v})
	}
	t.sort()
	return t, false
}

// errReschedule marks a failure that another node may not have: the claim
// gives up its selected node (upstream's ProvisioningReschedule).
var errReschedule = errors.New("reschedule")

// requirements are CreateVolume's accessibility requirements for a claim of
// class, upstream's way: requisite is the class's allowedTopologies, or
// else every node's topology for the driver's keys; preferred is requisite
// rotated to start with the selected node's topology (or, with no selected
// node, at an offset hashed from the claim's name, so that a StatefulSet's
// claims spread). With strict topology (always in node-local mode, where
// the driver can only create volumes on its own node) requisite and
// preferred are the selected node's topology alone.
func (c *Controller) requirements(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, selected string) (requisite, preferred []csi.Topology, err error) {
	var selectedTerm term
	var keys []string
	var requisiteTerms []term
	if selected != "" {
		keys = c.topologyKeys(selected)
		if len(keys) == 0 {
			return nil, nil, fmt.Errorf("no topology key found for node %s", selected)
		}
		node, err := c.nodes.Get(selected)
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("%w: node %q not found", errReschedule, selected)
		} else if err != nil {
			return nil, nil, err
		}
		t, missing := nodeTerm(node, keys)
		if missing {
			return nil, nil, fmt.Errorf("topology labels from selected node %v does not match topology keys from CSINode %v", node.Labels, keys)
		}
		selectedTerm = t
		if c.strictTopology() {
			if allowed := flatten(class.AllowedTopologies); len(allowed) > 0 && !slices.ContainsFunc(allowed, selectedTerm.within) {
				return nil, nil, fmt.Errorf("selected node '%q' topology '%v' is not in allowed topologies: %v", selected, selectedTerm, allowed)
			}
			requisiteTerms = []term{selectedTerm}
		}
	}
	if len(requisiteTerms) == 0 {
		if len(class.AllowedTopologies) > 0 {
			requisiteTerms = flatten(class.AllowedTopologies)
		} else {
			if keys == nil {
				keys = c.anyTopologyKeys()
			}
			if requisiteTerms, err = c.allNodeTerms(keys); err != nil {
				return nil, nil, err
			}
		}
	}
	slices.SortFunc(requisiteTerms, term.compare)
	requisiteTerms = slices.CompactFunc(requisiteTerms, func(a, b term) bool { return a.compare(b) == 0 })
	if len(requisiteTerms) == 0 {
		return nil, nil, errors.New("no available topology found")
	}

	var preferredTerms []term
	if selected == "" {
		i := nameOffset(claim.Name) % uint32(len(requisiteTerms))
		preferredTerms = append(requisiteTerms[i:len(requisiteTerms):len(requisiteTerms)], requisiteTerms[:i]...)
	} else {
		for i, t := range requisiteTerms {
			if t.within(selectedTerm) {
				preferredTerms = append(requisiteTerms[i:len(requisiteTerms):len(requisiteTerms)], requisiteTerms[:i]...)
				break
			}
		}
		if preferredTerms == nil {
			return nil, nil, fmt.Errorf("topology %v from selected node %q is not in requisite: %v", selectedTerm, selected, requisiteTerms)
		}
	}
	for _, t := range requisiteTerms {
		requisite = append(requisite, t.topology())
	}
	for _, t := range preferredTerms {
		preferred = append(preferred, t.topology())
	}
	return requisite, preferred, nil
}

// allNodeTerms is every node's topology for keys.
func (c *Controller) allNodeTerms(keys []string) ([]term, error) {
	if len(keys) == 0 {
		return nil, errors.New("no available topology found")
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []term
	for _, n := range nodes {
		if t, missing := nodeTerm(n, keys); !missing {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("topologyKeys %v were not found on any nodes", keys)
	}
	return out, nil
}

// nameOffset is upstream's getPVCNameHashAndIndexOffset: claims named
// <template>-<set>-<ordinal> hash their set name and add their ordinal.
func nameOffset(name string) uint32 {
	var index uint32
	hashed := name
	if dash := strings.LastIndexByte(name, '-'); dash != -1 {
		if n, err := strconv.ParseUint(name[dash+1:], 10, 32); err == nil {
			index = uint32(n)
			hashed = name[:dash]
			if dash := strings.LastIndexByte(hashed, '-'); dash != -1 {
				hashed = hashed[dash+1:]
			}
		}
	}
	h := fnv.New32()
	h.Write([]byte(hashed))
	return h.Sum32() + index
}

// nodeAffinity is the PV's node affinity for a volume's accessible
// topology: one term per topology, one In expression per segment.
func nodeAffinity(accessible []csi.Topology) *corev1.VolumeNodeAffinity {
	var terms []corev1.NodeSelectorTerm
	for _, t := range accessible {
		if len(t) == 0 {
			continue
		}
		var exprs []corev1.NodeSelectorRequirement
		for _, s := range termOf(t) {
			exprs = append(exprs, corev1.NodeSelectorRequirement{Key: s.key, Operator: corev1.NodeSelectorOpIn, Values: []string{s.value}})
		}
		terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: exprs})
	}
	if len(terms) == 0 {
		return nil
	}
	return &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: terms}}
}
