package bootstraptoken

import (
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The signatures upstream's signer (go-jose) makes for these inputs: the
// interoperability vectors of k8s.io/cluster-bootstrap's tests.
func TestSignMatchesUpstreamVectors(t *testing.T) {
	const content = "Hello from the other side. I must have called a thousand times."
	tok := Token{ID: "joshua", Secret: "my voice is my passcode"}
	for _, c := range []struct{ content, want string }{
		{content, "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"},
		{"", "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"},
	} {
		if got := Sign(c.content, tok); got != c.want {
			t.Errorf("Sign(%q) = %s, want %s", c.content, got, c.want)
		}
		if !Verify(c.content, c.want, tok) {
			t.Errorf("Verify(%q) refused upstream's signature", c.content)
		}
	}
	if Verify(content+"!", Sign(content, tok), tok) || Verify(content, Sign(content, tok), Token{ID: "joshua", Secret: "other"}) {
		t.Fatal("Verify accepted another content or another secret")
	}
}

func TestGenerateAndParse(t *testing.T) {
	tok, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(tok.String()) {
		t.Fatalf("generated token %q is not of upstream's form", tok)
	}
	back, err := Parse(tok.String())
	if err != nil || back != tok {
		t.Fatalf("Parse(%q) = %v, %v", tok, back, err)
	}
	for _, bad := range []string{"", "abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde", "abcdef.0123456789abcdef0"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
		}
	}
	_, err = Parse("nope")
	if want := `the bootstrap token "nope" was not of the form "\\A([a-z0-9]{6})\\.([a-z0-9]{16})\\z"`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}

// stored is the Secret as the API server returns it: stringData merged
// into data.
func stored(s *corev1.Secret) *corev1.Secret {
	s = s.DeepCopy()
	s.Data = map[string][]byte{}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
	return s
}

func TestUsable(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := Token{ID: "abcdef", Secret: "0123456789abcdef"}
	s := stored(NewSecret(tok, time.Hour, now, "for a test"))
	if s.Name != "bootstrap-token-abcdef" || s.Namespace != "kube-system" || s.Type != "bootstrap.kubernetes.io/token" ||
		string(s.Data["expiration"]) != "2025-01-01T01:00:00Z" || string(s.Data["description"]) != "for a test" {
		t.Fatalf("secret %+v", s)
	}
	for _, usage := range []string{KeyUsageAuthn, KeyUsageSigning} {
		if got, ok := Usable(s, usage, now); !ok || got != tok {
			t.Fatalf("a fresh token is not usable for %s", usage)
		}
	}
	if _, ok := Usable(s, KeyUsageAuthn, now.Add(time.Hour)); ok {
		t.Fatal("a token is usable at its expiration")
	}
	forever := stored(NewSecret(tok, 0, now, ""))
	if _, ok := Usable(forever, KeyUsageAuthn, now.AddDate(10, 0, 0)); !ok {
		t.Fatal("a token without expiration expired")
	}
	for what, mutate := range map[string]func(*corev1.Secret){
		"wrong type":        func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque },
		"name not its ID":   func(s *corev1.Secret) { s.Name = "bootstrap-token-zzzzzz" },
		"bad expiration":    func(s *corev1.Secret) { s.Data[KeyExpiration] = []byte("tomorrow") },
		"usage not true":    func(s *corev1.Secret) { s.Data[KeyUsageAuthn] = []byte("yes") },
		"being deleted":     func(s *corev1.Secret) { s.DeletionTimestamp = &metav1.Time{Time: now} },
		"malformed secret":  func(s *corev1.Secret) { s.Data[KeyTokenSecret] = []byte("short") },
		"another namespace": func(s *corev1.Secret) { s.Namespace = "default" },
	} {
		c := s.DeepCopy()
		mutate(c)
		if _, ok := Usable(c, KeyUsageAuthn, now); ok {
			t.Errorf("%s: usable", what)
		}
	}
}
