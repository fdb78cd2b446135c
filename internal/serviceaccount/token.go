// Package serviceaccount issues and checks the service account tokens of
// upstream's TokenRequest API (upstream's pkg/serviceaccount): JSON Web
// Tokens signed with ES256 by one key that the server keeps in its data
// directory (internal/pki, tls/sa.key), with upstream's claims:
//
//	iss            https://kubernetes.default.svc.cluster.local
//	sub            system:serviceaccount:<namespace>:<name>
//	aud            the requested audiences (default: the issuer)
//	exp, iat, nbf  seconds since the epoch
//	jti            a random UUID
//	kubernetes.io  namespace, serviceaccount {name, uid}, and the bound
//	               object: pod {name, uid} (with node {name, uid} once
//	               scheduled), secret or node; warnafter for the tokens
//	               the kubelet projects (see Claims)
//
// The package is pure: it signs and checks signatures, issuer, audience and
// times. That the account and the bound object still exist with the UIDs
// of the claims is the API server's check (internal/apiserver), which
// reads them.
//
// There is no authorization (RBAC) in moorage: a valid service account
// token is served like the admin token for now.
package serviceaccount

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Issuer is the iss claim of every token, and the API server's audience:
// upstream's default for a cluster named cluster.local.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Upstream's lifetimes. A pod-bound token requested for exactly
// WarnOnlyExpirationSeconds (what the ServiceAccount admission plugin
// projects into every pod) is issued for ExtendedExpirationSeconds instead,
// with a warnafter claim at the requested time, so that clients that do not
// reload their token yet keep working (upstream's
// --service-account-extend-token-expiration, on by default).
const (
	DefaultExpirationSeconds  = 60 * 60
	MinExpirationSeconds      = 10 * 60
	MaxExpirationSeconds      = 1 << 32
	WarnOnlyExpirationSeconds = 60*60 + 7
	ExtendedExpirationSeconds = 365 * 24 * 60 * 60
)

// Leeway is the clock skew allowed on exp and nbf, as upstream's.
const Leeway = time.Minute

// UserName is the user a token of the account ns/name authenticates as.
func UserName(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// Ref names one object in the kubernetes.io claim.
type Ref struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// Private is the kubernetes.io claim.
type Private struct {
	Namespace      string `json:"namespace,omitempty"`
	Node           *Ref   `json:"node,omitempty"`
	Pod            *Ref   `json:"pod,omitempty"`
	Secret         *Ref   `json:"secret,omitempty"`
	ServiceAccount Ref    `json:"serviceaccount"`
	// WarnAfter is when an extended token is past its requested life.
	WarnAfter int64 `json:"warnafter,omitempty"`
}

// Claims are a token's payload. The fields are in the order upstream's
// tokens show them (alphabetical).
type Claims struct {
	Audience   Audience `json:"aud"`
	Expiry     int64    `json:"exp"`
	IssuedAt   int64    `json:"iat"`
	Issuer     string   `json:"iss"`
	ID         string   `json:"jti,omitempty"`
	Kubernetes Private  `json:"kubernetes.io"`
	NotBefore  int64    `json:"nbf"`
	Subject    string   `json:"sub"`
}

// Audience is the aud claim: a list, which a token may also carry as one
// string (RFC 7519 allows both).
type Audience []string

// UnmarshalJSON takes a string or a list of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// Errors of Verify; the API server answers 401 Unauthorized to all of them.
var (
	ErrMalformed   = errors.New("token is not a JWT")
	ErrSignature   = errors.New("token signature is invalid")
	ErrIssuer      = errors.New("token was not issued by this server")
	ErrAudience    = errors.New("token audiences do not include the API server")
	ErrExpired     = errors.New("token has expired")
	ErrNotValidYet = errors.New("token is not valid yet")
)

// Signer signs and checks tokens with one P-256 key.
type Signer struct {
	key   *ecdsa.PrivateKey
	keyID string
}

// NewSigner returns a Signer for key, which must be a P-256 key.
func NewSigner(key *ecdsa.PrivateKey) (*Signer, error) {
	if key == nil || key.Curve.Params().BitSize != 256 {
		return nil, errors.New("serviceaccount: the signing key must be an ECDSA P-256 key (ES256)")
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	// The key ID is what upstream derives from a public key: the
	// unpadded base64url SHA-256 of its DER encoding.
	sum := sha256.Sum256(der)
	return &Signer{key: key, keyID: base64.RawURLEncoding.EncodeToString(sum[:])}, nil
}

// KeyID is the kid header of the tokens this Signer issues.
func (s *Signer) KeyID() string { return s.keyID }

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

// Sign returns the compact serialization of a JWT carrying c.
func (s *Signer) Sign(c *Claims) (string, error) {
	h, err := json.Marshal(header{Alg: "ES256", Kid: s.keyID})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	digest := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", err
	}
	// ES256 signatures are R and S as two 32-byte big-endian numbers
	// (RFC 7518, 3.4), not ASN.1.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// LooksLikeJWT tells whether a bearer token has a JWT's shape (three
// base64url parts, the first a JSON object), without checking anything.
func LooksLikeJWT(token string) bool {
	return strings.Count(token, ".") == 2 && strings.HasPrefix(token, "eyJ")
}

// Verify checks a token's signature, issuer, audience (the API server's,
// Issuer) and times at now, with Leeway, and returns its claims.
func (s *Signer) Verify(token string, now time.Time) (*Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, ErrMalformed
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, ErrMalformed
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, ErrMalformed
	}
	if h.Alg != "ES256" || (h.Kid != "" && h.Kid != s.keyID) {
		return nil, ErrSignature
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, ErrSignature
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, sv := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&s.key.PublicKey, digest[:], r, sv) {
		return nil, ErrSignature
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, ErrMalformed
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.Issuer != Issuer {
		return nil, ErrIssuer
	}
	if !slices.Contains(c.Audience, Issuer) {
		return nil, ErrAudience
	}
	if now.Add(-Leeway).Unix() > c.Expiry {
		return nil, ErrExpired
	}
	if c.NotBefore != 0 && now.Add(Leeway).Unix() < c.NotBefore {
		return nil, ErrNotValidYet
	}
	return &c, nil
}
