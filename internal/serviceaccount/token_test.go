package serviceaccount

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(now time.Time, seconds int64, aud ...string) *Claims {
	return &Claims{
		Audience: aud, Issuer: Issuer, Subject: UserName("default", "default"),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Unix() + seconds, ID: "id",
		Kubernetes: Private{Namespace: "default", ServiceAccount: Ref{Name: "default", UID: "u1"}, Pod: &Ref{Name: "p", UID: "u2"}},
	}
}

func TestSignVerify(t *testing.T) {
	s := newSigner(t)
	now := time.Now()
	token, err := s.Sign(claims(now, 3600, Issuer))
	if err != nil {
		t.Fatal(err)
	}
	if !LooksLikeJWT(token) {
		t.Fatalf("%q does not look like a JWT", token)
	}
	// Upstream's layout: header alg and kid, claims in alphabetical order.
	parts := strings.Split(token, ".")
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if want := `{"alg":"ES256","kid":"` + s.KeyID() + `"}`; string(h) != want {
		t.Fatalf("header %s, want %s", h, want)
	}
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(p, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["aud"]) != `["`+Issuer+`"]` || string(raw["sub"]) != `"system:serviceaccount:default:default"` ||
		string(raw["kubernetes.io"]) != `{"namespace":"default","pod":{"name":"p","uid":"u2"},"serviceaccount":{"name":"default","uid":"u1"}}` {
		t.Fatalf("claims %s", p)
	}
	c, err := s.Verify(token, now)
	if err != nil || c.Kubernetes.Pod.UID != "u2" {
		t.Fatalf("Verify: %+v, %v", c, err)
	}
	// The leeway: a minute past exp is still fine, two are not.
	if _, err := s.Verify(token, now.Add(3600*time.Second+30*time.Second)); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	if _, err := s.Verify(token, now.Add(3600*time.Second+2*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := s.Verify(token, now.Add(-2*time.Minute)); !errors.Is(err, ErrNotValidYet) {
		t.Fatalf("not valid yet: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	s := newSigner(t)
	now := time.Now()
	good, _ := s.Sign(claims(now, 3600, Issuer))
	other, _ := newSigner(t).Sign(claims(now, 3600, Issuer))
	otherAud, _ := s.Sign(claims(now, 3600, "vault"))
	parts := strings.Split(good, ".")
	c := claims(now, 3600, Issuer)
	c.Kubernetes.ServiceAccount.Name = "admin"
	forgedPayload, _ := json.Marshal(c)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedPayload) + "." + parts[2]
	badIss := claims(now, 3600, Issuer)
	badIss.Issuer = "kubernetes/serviceaccount"
	wrongIssuer, _ := s.Sign(badIss)
	noneAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
	for _, c := range []struct {
		what, token string
		want        error
	}{
		{"signed by another key", other, ErrSignature},
		{"a payload changed", tampered, ErrSignature},
		{"alg none", noneAlg, ErrSignature},
		{"another audience", otherAud, ErrAudience},
		{"another issuer", wrongIssuer, ErrIssuer},
		{"not a JWT", "abc", ErrMalformed},
	} {
		if _, err := s.Verify(c.token, now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
}
