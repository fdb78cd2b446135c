package bootstraptoken_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/testserver"
)

// Join turns a server URL and a token into a working client configuration,
// trusting nothing but what the token signed.
func TestJoin(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	tok, err := bootstraptoken.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, bootstraptoken.NewSecret(tok, time.Hour, time.Now(), ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var joined *clientcmdapi.Config
	for {
		joined, err = bootstraptoken.Join(ctx, srv.URL, tok)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the signer signs cluster-info
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*joined, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != srv.URL || string(cfg.CAData) != string(srv.Loopback.TLSClientConfig.CAData) || cfg.BearerToken != tok.String() || cfg.Insecure {
		t.Fatalf("joined config: host %s, token %q, insecure %v", cfg.Host, cfg.BearerToken, cfg.Insecure)
	}
	joinedClient, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := joinedClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the joined client cannot list nodes: %v", err)
	}

	// A token the cluster does not know, and a known ID with a wrong secret.
	for _, c := range []struct {
		tok  bootstraptoken.Token
		want string
	}{
		{bootstraptoken.Token{ID: "zzzzzz", Secret: tok.Secret}, `there is no JWS signed token in the cluster-info ConfigMap. This token id "zzzzzz" is invalid for this cluster, can't connect`},
		{bootstraptoken.Token{ID: tok.ID, Secret: "0000000000000000"}, "failed to verify JWS signature of received cluster info object, can't trust this API Server"},
	} {
		if _, err := bootstraptoken.Join(ctx, srv.URL, c.tok); err == nil || err.Error() != c.want {
			t.Errorf("joining with %s: %v, want %s", c.tok, err, c.want)
		}
	}
	if _, err := bootstraptoken.Join(ctx, strings.Replace(srv.URL, "https", "http", 1), tok); err == nil {
		t.Error("joining an http:// URL worked")
	}
}
