package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Upstream's token lifetimes: a projected token lives an hour unless the
// pod asks otherwise, and is refreshed past 80% of its life or after 24
// hours, whichever comes first.
const (
	defaultTokenSeconds = 3600
	maxTokenAge         = 24 * time.Hour
)

type tokenKey struct {
	pod                    types.UID
	namespace, account     string
	audience               string
	expirationSeconds      int64
	boundName, boundObject string
}

// tokenCache keeps the tokens issued for each pod's projections, so that
// Update rewrites a token file only when the token is refreshed.
type tokenCache struct {
	mu sync.Mutex
	m  map[tokenKey]*authenticationv1.TokenRequest
}

func (c *tokenCache) forget(pod types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.pod == pod {
			delete(c.m, k)
		}
	}
}

// tokenFile is the file of a serviceAccountToken projection: the token,
// mode 0600 owned by the pod's single run-as user when there is an fsGroup
// or such a user (fsGroup ownership then makes it 0640), else the
// volume's default mode, as upstream.
func (m *Manager) tokenFile(ctx context.Context, pod *corev1.Pod, proj *corev1.ServiceAccountTokenProjection, defaultMode int32) (fileProjection, error) {
	token, err := m.token(ctx, pod, proj)
	if err != nil {
		return fileProjection{}, err
	}
	fp := fileProjection{Data: []byte(token), Mode: defaultMode}
	fsUser := fsUserFrom(pod)
	if fsUser != nil || podFSGroup(pod) != nil {
		fp.Mode = 0o600
	}
	fp.FsUser = fsUser
	return fp, nil
}

func (m *Manager) token(ctx context.Context, pod *corev1.Pod, proj *corev1.ServiceAccountTokenProjection) (string, error) {
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	if m.opts.TokenSource == nil {
		return "", fmt.Errorf("cannot write the token of service account %s/%s at %q: this agent has no token source (the TokenRequest API) yet", pod.Namespace, account, proj.Path)
	}
	seconds := int64(defaultTokenSeconds)
	if proj.ExpirationSeconds != nil {
		seconds = *proj.ExpirationSeconds
	}
	key := tokenKey{pod: pod.UID, namespace: pod.Namespace, account: account, audience: proj.Audience,
		expirationSeconds: seconds, boundName: pod.Name, boundObject: string(pod.UID)}
	now := m.opts.Now()

	m.tokens.mu.Lock()
	cached := m.tokens.m[key]
	m.tokens.mu.Unlock()
	if cached != nil && !tokenNeedsRefresh(cached, now) {
		return cached.Status.Token, nil
	}

	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &seconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
		},
	}}
	if proj.Audience != "" {
		req.Spec.Audiences = []string{proj.Audience}
	}
	tr, err := m.opts.TokenSource.Token(ctx, pod.Namespace, account, req)
	if err == nil && (tr == nil || tr.Status.Token == "") {
		err = errors.New("the token source returned no token")
	}
	if err != nil {
		// A refresh that fails keeps a token that is still valid.
		if cached != nil && now.Before(cached.Status.ExpirationTimestamp.Time) {
			return cached.Status.Token, nil
		}
		return "", fmt.Errorf("failed to fetch token: %w", err)
	}
	if tr.Spec.ExpirationSeconds == nil {
		tr.Spec.ExpirationSeconds = &seconds
	}
	m.tokens.mu.Lock()
	if m.tokens.m == nil {
		m.tokens.m = map[tokenKey]*authenticationv1.TokenRequest{}
	}
	m.tokens.m[key] = tr
	m.tokens.mu.Unlock()
	return tr.Status.Token, nil
}

// tokenNeedsRefresh: past 80% of the token's life, or older than a day.
func tokenNeedsRefresh(tr *authenticationv1.TokenRequest, now time.Time) bool {
	exp := tr.Status.ExpirationTimestamp.Time
	if exp.IsZero() || tr.Spec.ExpirationSeconds == nil {
		return true
	}
	ttl := time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
	issued := exp.Add(-ttl)
	if now.After(issued.Add(maxTokenAge)) {
		return true
	}
	return now.After(exp.Add(-ttl / 5))
}

// fsUserFrom is the user every container of the pod runs as, when they
// all name the same one (in their own or the pod's security context);
// else nil.
func fsUserFrom(pod *corev1.Pod) *int64 {
	var user *int64
	var podUser *int64
	if pod.Spec.SecurityContext != nil {
		podUser = pod.Spec.SecurityContext.RunAsUser
	}
	visit := func(sc *corev1.SecurityContext) bool {
		u := podUser
		if sc != nil && sc.RunAsUser != nil {
			u = sc.RunAsUser
		}
		if u == nil || (user != nil && *user != *u) {
			user = nil
			return false
		}
		user = u
		return true
	}
	for i := range pod.Spec.InitContainers {
		if !visit(pod.Spec.InitContainers[i].SecurityContext) {
			return nil
		}
	}
	for i := range pod.Spec.Containers {
		if !visit(pod.Spec.Containers[i].SecurityContext) {
			return nil
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if !visit(pod.Spec.EphemeralContainers[i].SecurityContext) {
			return nil
		}
	}
	return user
}
