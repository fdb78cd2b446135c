package apiserver_test

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/serviceaccount"
	"github.com/moorage/moorage/internal/testserver"
)

// withToken is a client of srv that authenticates with token.
func withToken(t *testing.T, srv *app.Server, token string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(srv.Loopback)
	cfg.BearerToken = token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// authenticates tells whether a client of srv with token may list pods.
func authenticates(t *testing.T, srv *app.Server, token string) bool {
	t.Helper()
	_, err := withToken(t, srv, token).CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if err != nil && !apierrors.IsUnauthorized(err) {
		t.Fatalf("listing pods: %v", err)
	}
	return err == nil
}

func waitForDefaultAccount(t *testing.T, c kubernetes.Interface, ns string) *corev1.ServiceAccount {
	t.Helper()
	var sa *corev1.ServiceAccount
	eventually(t, "the default service account in "+ns, func() bool {
		var err error
		sa, err = c.CoreV1().ServiceAccounts(ns).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	})
	return sa
}

// The volume upstream's ServiceAccount admission plugin adds, field by field.
func wantTokenVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr.To[int32](420),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}}
}

func TestServiceAccountAdmissionMountsTheToken(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	pods := c.CoreV1().Pods("default")

	pod, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
		Containers: []corev1.Container{
			{Name: "a", Image: "busybox"},
			{Name: "b", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "own", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}},
		},
		Volumes: []corev1.Volume{{Name: "own", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.ServiceAccountName != "default" || pod.Spec.DeprecatedServiceAccount != "default" {
		t.Fatalf("serviceAccountName %q (serviceAccount %q), want default", pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount)
	}
	if len(pod.Spec.Volumes) != 2 || !regexp.MustCompile(`^kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}$`).MatchString(pod.Spec.Volumes[1].Name) {
		t.Fatalf("volumes %+v", pod.Spec.Volumes)
	}
	name := pod.Spec.Volumes[1].Name
	if want := wantTokenVolume(name); !equality.Semantic.DeepEqual(pod.Spec.Volumes[1], want) {
		t.Fatalf("volume\n%+v\nwant\n%+v", pod.Spec.Volumes[1], want)
	}
	mount := corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}
	if got := pod.Spec.InitContainers[0].VolumeMounts; len(got) != 1 || got[0] != mount {
		t.Fatalf("init container mounts %+v", got)
	}
	if got := pod.Spec.Containers[0].VolumeMounts; len(got) != 1 || got[0] != mount {
		t.Fatalf("container a mounts %+v", got)
	}
	if got := pod.Spec.Containers[1].VolumeMounts; len(got) != 1 || got[0].Name != "own" {
		t.Fatalf("container b, which mounts its own volume there, got %+v", got)
	}

	// Opting out: the pod's choice wins over the account's.
	noMount, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "no-mount"}, Spec: corev1.PodSpec{
		AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "a", Image: "busybox"}},
	}}, metav1.CreateOptions{})
	if err != nil || len(noMount.Spec.Volumes) != 0 || len(noMount.Spec.Containers[0].VolumeMounts) != 0 {
		t.Fatalf("automountServiceAccountToken false: %v %+v", err, noMount.Spec)
	}
	if _, err := c.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{
		ObjectMeta:                   metav1.ObjectMeta{Name: "quiet"},
		AutomountServiceAccountToken: ptr.To(false),
		ImagePullSecrets:             []corev1.LocalObjectReference{{Name: "registry"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	quiet, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "quiet"}, Spec: corev1.PodSpec{
		ServiceAccountName: "quiet", Containers: []corev1.Container{{Name: "a", Image: "busybox"}},
	}}, metav1.CreateOptions{})
	if err != nil || len(quiet.Spec.Volumes) != 0 || len(quiet.Spec.ImagePullSecrets) != 1 || quiet.Spec.ImagePullSecrets[0].Name != "registry" {
		t.Fatalf("an account without automount: %v %+v", err, quiet.Spec)
	}
	loud, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "loud"}, Spec: corev1.PodSpec{
		ServiceAccountName: "quiet", AutomountServiceAccountToken: ptr.To(true), Containers: []corev1.Container{{Name: "a", Image: "busybox"}},
	}}, metav1.CreateOptions{})
	if err != nil || len(loud.Spec.Volumes) != 1 {
		t.Fatalf("a pod asking for the token of an account without automount: %v %+v", err, loud.Spec)
	}
}

func TestServiceAccountAdmissionRefusesAMissingAccount(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	_, err := c.CoreV1().Pods("default").Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{
		ServiceAccountName: "nope", Containers: []corev1.Container{{Name: "a", Image: "busybox"}},
	}}, metav1.CreateOptions{})
	const want = `pods "p" is forbidden: error looking up service account default/nope: serviceaccount "nope" not found`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestServiceAccountAdmissionEnforcesMountableSecrets(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	if _, err := c.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "strict", Annotations: map[string]string{"kubernetes.io/enforce-mountable-secrets": "true"}},
		Secrets:    []corev1.ObjectReference{{Name: "allowed"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(secret string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + secret}, Spec: corev1.PodSpec{
			ServiceAccountName: "strict", Containers: []corev1.Container{{Name: "a", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}},
		}}
	}
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod("allowed"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CoreV1().Pods("default").Create(ctx, pod("other"), metav1.CreateOptions{})
	const want = `pods "p-other" is forbidden: volume with secret.secretName="other" is not allowed because service account strict does not reference that secret`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func createToken(t *testing.T, c kubernetes.Interface, ns, sa string, spec authenticationv1.TokenRequestSpec) *authenticationv1.TokenRequest {
	t.Helper()
	tr, err := c.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestTokenRequestAndServiceAccountAuthentication(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.StartIn(t, dir)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	sa := waitForDefaultAccount(t, c, "default")

	before := time.Now()
	tr := createToken(t, c, "default", "default", authenticationv1.TokenRequestSpec{})
	if exp := tr.Status.ExpirationTimestamp.Time; exp.Before(before.Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("expiration %s, want in an hour", exp)
	}
	if !authenticates(t, srv, tr.Status.Token) {
		t.Fatal("a fresh service account token does not authenticate")
	}

	// Refused requests, with upstream's errors.
	_, err := c.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](60)}}, metav1.CreateOptions{})
	if want := `TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes`; err == nil || err.Error() != want {
		t.Fatalf("60 s: %v, want %s", err, want)
	}
	if _, err := c.CoreV1().ServiceAccounts("default").CreateToken(ctx, "nope", &authenticationv1.TokenRequest{}, metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a missing account: %v", err)
	}

	// Bound to a pod: refused once the pod is gone.
	pod, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := func(uid string) *authenticationv1.BoundObjectReference {
		return &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: "bound", UID: types.UID(uid)}
	}
	_, err = c.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: ref("wrong")}}, metav1.CreateOptions{})
	if want := `Operation cannot be fulfilled on Pod "bound": the UID in the bound object reference (wrong) does not match the UID in record. The object might have been deleted and then recreated`; !apierrors.IsConflict(err) || err.Error() != want {
		t.Fatalf("a wrong UID: %v", err)
	}
	projected := createToken(t, c, "default", "default", authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3607), BoundObjectRef: ref(string(pod.UID))})
	if exp := projected.Status.ExpirationTimestamp.Time; exp.After(time.Now().Add(62 * time.Minute)) {
		t.Fatalf("the extended token reports expiration %s, want the requested one", exp)
	}
	if !authenticates(t, srv, projected.Status.Token) {
		t.Fatal("a pod-bound token does not authenticate")
	}
	if err := c.CoreV1().Pods("default").Delete(ctx, "bound", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	if authenticates(t, srv, projected.Status.Token) {
		t.Fatal("a token bound to a deleted pod still authenticates")
	}

	// Forged and expired tokens: made with another key, and with the
	// server's own key but past their expiration or for an account
	// recreated since.
	key, err := pki.EnsureServiceAccountKey(pki.Files{Dir: filepath.Join(dir, "tls")})
	if err != nil {
		t.Fatal(err)
	}
	own, _ := serviceaccount.NewSigner(key)
	claims := func(expiry time.Time, uid string) *serviceaccount.Claims {
		return &serviceaccount.Claims{
			Audience: serviceaccount.Audience{serviceaccount.Issuer}, Issuer: serviceaccount.Issuer,
			Subject: "system:serviceaccount:default:default", IssuedAt: expiry.Add(-time.Hour).Unix(), NotBefore: expiry.Add(-time.Hour).Unix(), Expiry: expiry.Unix(),
			Kubernetes: serviceaccount.Private{Namespace: "default", ServiceAccount: serviceaccount.Ref{Name: "default", UID: uid}},
		}
	}
	good, _ := own.Sign(claims(time.Now().Add(time.Hour), string(sa.UID)))
	if !authenticates(t, srv, good) {
		t.Fatal("a token made with the server's key does not authenticate")
	}
	expired, _ := own.Sign(claims(time.Now().Add(-2*time.Minute), string(sa.UID)))
	staleUID, _ := own.Sign(claims(time.Now().Add(time.Hour), "another-uid"))
	otherKey, err := pki.EnsureServiceAccountKey(pki.Files{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := serviceaccount.NewSigner(otherKey)
	forged, _ := other.Sign(claims(time.Now().Add(time.Hour), string(sa.UID)))
	for what, token := range map[string]string{"expired": expired, "for another account UID": staleUID, "forged": forged} {
		if authenticates(t, srv, token) {
			t.Errorf("a %s token authenticates", what)
		}
	}

	// The account deleted: its tokens go with it.
	if err := c.CoreV1().ServiceAccounts("default").Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if authenticates(t, srv, tr.Status.Token) {
		t.Fatal("a token of a deleted account authenticates")
	}
}

func TestTokenRequestInDiscovery(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	list, err := c.Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := raw(t, srv, "GET", "/openapi/v3/api/v1", "", ""); code != 200 || !strings.Contains(body, `"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"`) {
		t.Errorf("OpenAPI v3 of api/v1 lacks the token path: %d", code)
	}
	for _, r := range list.APIResources {
		if r.Name == "serviceaccounts/token" {
			if r.Group != "authentication.k8s.io" || r.Version != "v1" || r.Kind != "TokenRequest" || strings.Join(r.Verbs, ",") != "create" {
				t.Fatalf("serviceaccounts/token %+v", r)
			}
			return
		}
	}
	t.Fatal("no serviceaccounts/token in discovery")
}

// kubectl create token, with the real kubectl: the token it prints
// authenticates.
func TestKubectlCreateToken(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on PATH")
	}
	srv := testserver.Start(t)
	waitForDefaultAccount(t, testserver.Client(t, srv), "default")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", srv.Kubeconfig, "create", "token", "default", "--duration", "15m")
	cmd.Env = append(cmd.Environ(), "KUBECACHEDIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("kubectl create token default: %v\n%s%s", err, out, stderr)
	}
	token := strings.TrimSpace(string(out))
	if !serviceaccount.LooksLikeJWT(token) || !authenticates(t, srv, token) {
		t.Fatalf("kubectl printed %q, which does not authenticate", out)
	}
}

// Anonymous requests read cluster-info and nothing else; a bad token is
// refused even there.
func TestAnonymousReadsClusterInfoOnly(t *testing.T) {
	srv := testserver.Start(t)
	hc, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: srv.Loopback.TLSClientConfig.CAData}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const info = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
	if code := get(info, ""); code != http.StatusOK {
		t.Fatalf("anonymous cluster-info: %d", code)
	}
	for _, path := range []string{"/api/v1/namespaces/kube-public/configmaps", "/api/v1/namespaces/kube-system/secrets", "/api/v1/namespaces/kube-public/configmaps/kube-root-ca.crt", info + "?watch=1"} {
		if code := get(path, ""); code != http.StatusUnauthorized {
			t.Errorf("anonymous %s: %d, want 401", path, code)
		}
	}
	if code := get(info, "bogus"); code != http.StatusUnauthorized {
		t.Errorf("cluster-info with a bad token: %d, want 401", code)
	}
}

// Bootstrap tokens authenticate while their Secret is usable for
// authentication.
func TestBootstrapTokenAuthentication(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	secrets := c.CoreV1().Secrets("kube-system")
	tok := bootstraptoken.Token{ID: "abcdef", Secret: "0123456789abcdef"}
	if authenticates(t, srv, tok.String()) {
		t.Fatal("a token without a Secret authenticates")
	}
	s, err := secrets.Create(ctx, bootstraptoken.NewSecret(tok, time.Hour, time.Now(), ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !authenticates(t, srv, tok.String()) {
		t.Fatal("a valid bootstrap token does not authenticate")
	}
	if authenticates(t, srv, tok.ID+".ffffffffffffffff") {
		t.Fatal("a wrong secret authenticates")
	}
	update := func(mutate func(*corev1.Secret)) {
		t.Helper()
		cur, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(cur)
		if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(func(s *corev1.Secret) { s.Data["usage-bootstrap-authentication"] = []byte("false") })
	if authenticates(t, srv, tok.String()) {
		t.Error("a token not for authentication authenticates")
	}
	update(func(s *corev1.Secret) { s.Data["usage-bootstrap-authentication"] = []byte("true") })
	if !authenticates(t, srv, tok.String()) {
		t.Fatal("the token does not authenticate again")
	}
	// Last: the token cleaner deletes an expired token's Secret.
	update(func(s *corev1.Secret) {
		s.Data["expiration"] = []byte(time.Now().Add(-time.Second).UTC().Format(time.RFC3339))
	})
	if authenticates(t, srv, tok.String()) {
		t.Error("an expired token authenticates")
	}
}
