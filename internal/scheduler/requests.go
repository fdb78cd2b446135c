package scheduler

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
)

// podUsage is what a placed pod takes from its node: its requests for the
// NodeResourcesFit filter, and with the non-zero defaults for its score.
type podUsage struct {
	req, nonZero resources
}

func usageOf(p *corev1.Pod) podUsage {
	return podUsage{
		req:     podRequests(p),
		nonZero: toResources(resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nonZeroDefaults})),
	}
}

// RequestCache remembers what placed pods request across decisions, so a
// decision sums cached figures instead of re-reading every container's
// quantities of every pod on every node (upstream's scheduler cache keeps
// these sums in its NodeInfos for the same reason). Pods are keyed by
// pointer: the informers never modify an object, they replace it, so a
// pointer stands for one version of a pod. Entries no decision used since
// the previous Rotate are dropped at the next.
type RequestCache struct {
	mu        sync.Mutex
	cur, prev map[*corev1.Pod]podUsage
}

// NewRequestCache returns an empty cache.
func NewRequestCache() *RequestCache {
	return &RequestCache{cur: map[*corev1.Pod]podUsage{}, prev: map[*corev1.Pod]podUsage{}}
}

func (c *RequestCache) usage(p *corev1.Pod) podUsage {
	if c == nil {
		return usageOf(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.cur[p]; ok {
		return u
	}
	u, ok := c.prev[p]
	if !ok {
		u = usageOf(p)
	}
	c.cur[p] = u
	return u
}

// Rotate starts a new generation: what was not used since the last Rotate
// is forgotten.
func (c *RequestCache) Rotate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prev, c.cur = c.cur, make(map[*corev1.Pod]podUsage, len(c.cur))
}

// nodeUsage is the sum of the usages of a node's pods.
type nodeUsage struct {
	podUsage
	pods int
}

// usedOn sums what the pods on a node take, once per decision.
func (c *cluster) usedOn(node string) nodeUsage {
	if u, ok := c.used[node]; ok {
		return u
	}
	sum := func(pods []*corev1.Pod) nodeUsage {
		var u nodeUsage
		for _, p := range pods {
			pu := c.requests.usage(p)
			u.req.add(pu.req)
			u.nonZero.add(pu.nonZero)
			u.pods++
		}
		return u
	}
	var u nodeUsage
	if np := c.placed[node]; np != nil {
		np.once.Do(func() { np.usage = sum(np.Pods) })
		u = np.usage
		e := sum(c.extra[node])
		u.req.add(e.req)
		u.nonZero.add(e.nonZero)
		u.pods += e.pods
	} else {
		u = sum(c.podsOn[node])
	}
	c.used[node] = u
	return u
}

// withAntiAffinity are the pods on a node with required pod anti-affinity
// terms: the only ones that matter to a pod without terms of its own.
func (c *cluster) withAntiAffinity(node string) []*corev1.Pod {
	filter := func(pods []*corev1.Pod) []*corev1.Pod {
		var out []*corev1.Pod
		for _, p := range pods {
			if a := p.Spec.Affinity; a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
				out = append(out, p)
			}
		}
		return out
	}
	np := c.placed[node]
	if np == nil {
		return filter(c.podsOn[node])
	}
	np.antiOnce.Do(func() { np.anti = filter(np.Pods) })
	if extra := filter(c.extra[node]); len(extra) > 0 {
		return append(append([]*corev1.Pod(nil), np.anti...), extra...)
	}
	return np.anti
}
