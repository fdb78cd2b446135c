// Package bootstraptoken is upstream's bootstrap tokens (k8s.io/cluster-bootstrap
// and kubeadm's token discovery): the token format, the Secret that stores
// a token in kube-system, the detached JWS signatures of the cluster-info
// ConfigMap in kube-public, and Join, which turns a server URL and a token
// into a kubeconfig that trusts the server's CA.
//
// How a machine joins:
//
//  1. `moorage token create` stores a token abcdef.0123456789abcdef as the
//     Secret kube-system/bootstrap-token-abcdef.
//  2. The server publishes kube-public/cluster-info: a kubeconfig with its
//     URL and CA (internal/app), which anyone may read without
//     credentials; the bootstrap signer (internal/controller/bootstrap)
//     adds jws-kubeconfig-abcdef, an HS256 signature of that kubeconfig
//     keyed by the token's secret.
//  3. `moorage agent --server URL --token abcdef.0123456789abcdef` reads
//     cluster-info without trusting the server's certificate, checks the
//     signature with its token (only someone who knows the token can have
//     made it), and from then on trusts the CA in it.
//  4. As upstream's kubelet, the agent uses the token only to obtain its
//     node client certificate (package nodecert), with which it
//     authenticates from then on.
//
// There is no authorization (RBAC) in moorage: a valid bootstrap token is
// served like the admin token.
package bootstraptoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"regexp"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Names and keys of upstream's bootstrap token API
// (k8s.io/cluster-bootstrap/token/api).
const (
	// SecretPrefix + the token ID names a token's Secret in kube-system.
	SecretPrefix = "bootstrap-token-"

	KeyTokenID           = "token-id"
	KeyTokenSecret       = "token-secret"
	KeyExpiration        = "expiration" // RFC 3339; none: the token never expires
	KeyDescription       = "description"
	KeyUsageAuthn        = "usage-bootstrap-authentication"
	KeyUsageSigning      = "usage-bootstrap-signing"
	KeyAuthExtraGroups   = "auth-extra-groups"
	ConfigMapClusterInfo = "cluster-info" // in kube-public
	KeyKubeconfig        = "kubeconfig"
	// JWSKeyPrefix + the token ID is the key of a token's signature of
	// the cluster-info kubeconfig.
	JWSKeyPrefix = "jws-kubeconfig-"
)

// Pattern is upstream's format of a token: a 6-character ID and a
// 16-character secret, lower-case letters and digits.
const Pattern = `\A([a-z0-9]{6})\.([a-z0-9]{16})\z`

var tokenRE = regexp.MustCompile(Pattern)

// Token is a bootstrap token.
type Token struct {
	ID, Secret string
}

// String is the token as users pass it: ID.secret.
func (t Token) String() string { return t.ID + "." + t.Secret }

// Parse reads a token in upstream's format.
func Parse(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		return Token{}, fmt.Errorf("the bootstrap token %q was not of the form %q", s, Pattern)
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

// Generate returns a new random token.
func Generate() (Token, error) {
	id, err := randomString(6)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(16)
	if err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret}, nil
}

func randomString(n int) (string, error) {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b), nil
}

// SecretName is the name of t's Secret in kube-system.
func SecretName(id string) string { return SecretPrefix + id }

// NewSecret is the Secret that stores t, usable for authentication and for
// signing cluster-info, expiring ttl after now (never, for ttl 0), as
// `kubeadm token create` makes it.
func NewSecret(t Token, ttl time.Duration, now time.Time, description string) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName(t.ID), Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			KeyTokenID:      t.ID,
			KeyTokenSecret:  t.Secret,
			KeyUsageAuthn:   "true",
			KeyUsageSigning: "true",
		},
	}
	if ttl > 0 {
		s.StringData[KeyExpiration] = now.Add(ttl).UTC().Format(time.RFC3339)
	}
	if description != "" {
		s.StringData[KeyDescription] = description
	}
	return s
}

// Expiration is when a token's Secret expires; ok is false if it never
// does. An expiration that does not parse is in the past, as upstream.
func Expiration(s *corev1.Secret) (at time.Time, ok bool) {
	v, set := s.Data[KeyExpiration]
	if !set {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339, string(v))
	if err != nil {
		return time.Time{}, true
	}
	return at, true
}

// Usable returns the token a Secret stores if it may be used for usage
// (KeyUsageAuthn or KeyUsageSigning) at now: a bootstrap token Secret,
// named after its ID, not being deleted, not expired, with a well-formed
// token and that usage "true".
func Usable(s *corev1.Secret, usage string, now time.Time) (Token, bool) {
	if s.Type != corev1.SecretTypeBootstrapToken || s.Namespace != metav1.NamespaceSystem || s.DeletionTimestamp != nil {
		return Token{}, false
	}
	t := Token{ID: string(s.Data[KeyTokenID]), Secret: string(s.Data[KeyTokenSecret])}
	if !tokenRE.MatchString(t.String()) || s.Name != SecretName(t.ID) {
		return Token{}, false
	}
	if at, ok := Expiration(s); ok && !now.Before(at) {
		return Token{}, false
	}
	if string(s.Data[usage]) != "true" {
		return Token{}, false
	}
	return t, true
}

// jwsHeader is the protected header of a detached signature, byte for
// byte what upstream's signer (go-jose) writes: alg, then kid.
func jwsHeader(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + id + `"}`))
}

// Sign is upstream's detached JWS of content (RFC 7515, appendix F): the
// compact serialization of an HS256 JWS keyed by the token's secret, with
// the token ID as kid, without its payload ("header..signature").
func Sign(content string, t Token) string {
	h := jwsHeader(t.ID)
	mac := hmac.New(sha256.New, []byte(t.Secret))
	mac.Write([]byte(h + "." + base64.RawURLEncoding.EncodeToString([]byte(content))))
	return h + ".." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// Verify tells whether sig is t's detached signature of content.
func Verify(content, sig string, t Token) bool {
	return hmac.Equal([]byte(Sign(content, t)), []byte(sig))
}

// ClusterInfoKubeconfig is the kubeconfig cluster-info holds, as kubeadm
// writes it: one cluster, named "", with the server's URL and CA, and
// nothing else.
func ClusterInfoKubeconfig(server string, caPEM []byte) (string, error) {
	cfg := clientcmdapi.Config{Clusters: map[string]*clientcmdapi.Cluster{
		"": {Server: server, CertificateAuthorityData: caPEM},
	}}
	b, err := clientcmd.Write(cfg)
	return string(b), err
}
