package scheduler

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// Upstream's InterPodAffinity reasons.
const (
	errPodAffinity          = "node(s) didn't match pod affinity rules"
	errPodAntiAffinity      = "node(s) didn't match pod anti-affinity rules"
	errExistingAntiAffinity = "node(s) didn't satisfy existing pods anti-affinity rules"
)

// topologyPair is one topology domain: a node label and its value.
type topologyPair struct{ key, value string }

// affinityTerm is a required pod (anti-)affinity term, parsed for its owner.
type affinityTerm struct {
	selector    labels.Selector
	namespaces  sets.Set[string]
	nsSelector  labels.Selector
	topologyKey string
}

// newAffinityTerm parses a term of owner: no namespaces and no
// namespaceSelector mean the owner's namespace; matchLabelKeys and
// mismatchLabelKeys become In / NotIn requirements on the owner's values (as
// upstream's API server merges them at pod creation; merging twice changes
// nothing).
func newAffinityTerm(owner *corev1.Pod, t *corev1.PodAffinityTerm) (*affinityTerm, error) {
	ls := t.LabelSelector
	if ls != nil && (len(t.MatchLabelKeys) > 0 || len(t.MismatchLabelKeys) > 0) {
		ls = ls.DeepCopy()
		for _, k := range t.MatchLabelKeys {
			if v, ok := owner.Labels[k]; ok {
				ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{v}})
			}
		}
		for _, k := range t.MismatchLabelKeys {
			if v, ok := owner.Labels[k]; ok {
				ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{v}})
			}
		}
	}
	selector, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, err
	}
	nsSelector, err := metav1.LabelSelectorAsSelector(t.NamespaceSelector)
	if err != nil {
		return nil, err
	}
	namespaces := sets.New(t.Namespaces...)
	if len(t.Namespaces) == 0 && t.NamespaceSelector == nil {
		namespaces.Insert(owner.Namespace)
	}
	return &affinityTerm{selector: selector, namespaces: namespaces, nsSelector: nsSelector, topologyKey: t.TopologyKey}, nil
}

// matches: p is in one of the term's namespaces and has matching labels.
func (t *affinityTerm) matches(p *corev1.Pod, nsLabels labels.Set) bool {
	if !t.namespaces.Has(p.Namespace) && !t.nsSelector.Matches(nsLabels) {
		return false
	}
	return t.selector.Matches(labels.Set(p.Labels))
}

func matchesAll(terms []*affinityTerm, p *corev1.Pod, nsLabels labels.Set) bool {
	if len(terms) == 0 {
		return false
	}
	for _, t := range terms {
		if !t.matches(p, nsLabels) {
			return false
		}
	}
	return true
}

func requiredTerms(owner *corev1.Pod, anti bool) ([]*affinityTerm, error) {
	a := owner.Spec.Affinity
	var terms []corev1.PodAffinityTerm
	switch {
	case a == nil:
	case anti && a.PodAntiAffinity != nil:
		terms = a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	case !anti && a.PodAffinity != nil:
		terms = a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	}
	out := make([]*affinityTerm, 0, len(terms))
	for i := range terms {
		t, err := newAffinityTerm(owner, &terms[i])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// affinityState is upstream's InterPodAffinity pre-filter state: per
// topology domain, how many placed pods the new pod's terms match, and which
// domains placed pods' anti-affinity closes to it.
type affinityState struct {
	pod          *corev1.Pod
	affinity     []*affinityTerm
	antiAffinity []*affinityTerm
	// affinityCounts: placed pods matching all of the pod's affinity terms,
	// counted in each term's domain of their node.
	affinityCounts map[topologyPair]int
	// antiCounts: placed pods matching one of the pod's anti-affinity terms,
	// counted in that term's domain of their node.
	antiCounts map[topologyPair]int
	// existingAnti: domains where a placed pod's anti-affinity term matches
	// the new pod.
	existingAnti map[topologyPair]int
	podNS        labels.Set // the labels of the pod's namespace
}

// interPodAffinityPreFilter counts over the pods placed on known nodes.
// Placed pods' terms that do not parse are ignored; the new pod's are an
// error.
func interPodAffinityPreFilter(pod *corev1.Pod, c *cluster) (*affinityState, error) {
	s := &affinityState{pod: pod, affinityCounts: map[topologyPair]int{}, antiCounts: map[topologyPair]int{}, existingAnti: map[topologyPair]int{}}
	var err error
	if s.affinity, err = requiredTerms(pod, false); err != nil {
		return nil, fmt.Errorf("parsing pod: %w", err)
	}
	if s.antiAffinity, err = requiredTerms(pod, true); err != nil {
		return nil, fmt.Errorf("parsing pod: %w", err)
	}
	podNS := c.nsLabels[pod.Namespace]
	s.podNS = podNS
	ownTerms := len(s.affinity) > 0 || len(s.antiAffinity) > 0
	for _, node := range c.nodes {
		count := func(m map[topologyPair]int, key string) {
			if v, ok := node.Labels[key]; ok {
				m[topologyPair{key, v}]++
			}
		}
		// A pod without terms of its own only needs the placed pods that
		// have anti-affinity terms (upstream keeps a list of those too).
		pods := c.podsOn[node.Name]
		if !ownTerms {
			pods = c.withAntiAffinity(node.Name)
		}
		for _, e := range pods {
			if ownTerms {
				eNS := c.nsLabels[e.Namespace]
				if matchesAll(s.affinity, e, eNS) {
					for _, t := range s.affinity {
						count(s.affinityCounts, t.topologyKey)
					}
				}
				for _, t := range s.antiAffinity {
					if t.matches(e, eNS) {
						count(s.antiCounts, t.topologyKey)
					}
				}
			}
			if e.Spec.Affinity == nil || e.Spec.Affinity.PodAntiAffinity == nil {
				continue
			}
			existing, err := requiredTerms(e, true)
			if err != nil {
				continue
			}
			for _, t := range existing {
				if t.matches(pod, podNS) {
					count(s.existingAnti, t.topologyKey)
				}
			}
		}
	}
	return s, nil
}

// filter is upstream's InterPodAffinity filter, its three checks in order.
func (s *affinityState) filter(node *corev1.Node) *status {
	if !s.satisfiesAffinity(node) {
		return reject(unresolvable, errPodAffinity)
	}
	for _, t := range s.antiAffinity {
		if v, ok := node.Labels[t.topologyKey]; ok && s.antiCounts[topologyPair{t.topologyKey, v}] > 0 {
			return reject(unschedulable, errPodAntiAffinity)
		}
	}
	for k, v := range node.Labels {
		if s.existingAnti[topologyPair{k, v}] > 0 {
			return reject(unschedulable, errExistingAntiAffinity)
		}
	}
	return nil
}

// satisfiesAffinity: the node has every term's topology key and each domain
// holds a matching pod. The first pod of a group that matches its own terms
// may go anywhere with the keys when no pod matches at all.
func (s *affinityState) satisfiesAffinity(node *corev1.Node) bool {
	found := true
	for _, t := range s.affinity {
		v, ok := node.Labels[t.topologyKey]
		if !ok {
			return false
		}
		if s.affinityCounts[topologyPair{t.topologyKey, v}] <= 0 {
			found = false
		}
	}
	if found {
		return true
	}
	return len(s.affinityCounts) == 0 && matchesAll(s.affinity, s.pod, s.podNS)
}
