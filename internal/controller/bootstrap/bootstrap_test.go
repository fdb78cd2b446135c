package bootstrap_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/testserver"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func clusterInfo(t *testing.T, c kubernetes.Interface) map[string]string {
	t.Helper()
	cm, err := c.CoreV1().ConfigMaps("kube-public").Get(t.Context(), "cluster-info", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

func signatures(data map[string]string) []string {
	var ids []string
	for k := range data {
		if id, ok := strings.CutPrefix(k, "jws-kubeconfig-"); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// The server runs the signer and the cleaner: cluster-info carries one
// signature per usable token, and expired tokens go.
func TestSignerAndCleaner(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	data := clusterInfo(t, c)
	if len(signatures(data)) != 0 || !strings.Contains(data["kubeconfig"], "server: "+srv.URL) {
		t.Fatalf("cluster-info before any token: %v", data)
	}

	tok := bootstraptoken.Token{ID: "abcdef", Secret: "0123456789abcdef"}
	if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, bootstraptoken.NewSecret(tok, time.Hour, time.Now(), ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cluster-info signed with abcdef", func() bool {
		data = clusterInfo(t, c)
		return data["jws-kubeconfig-abcdef"] != ""
	})
	if !bootstraptoken.Verify(data["kubeconfig"], data["jws-kubeconfig-abcdef"], tok) {
		t.Fatal("the signature does not verify with the token")
	}

	// A token not for signing gets no signature; one that expires loses
	// its signature and its Secret.
	noSign := bootstraptoken.NewSecret(bootstraptoken.Token{ID: "nosign", Secret: "0123456789abcdef"}, time.Hour, time.Now(), "")
	noSign.StringData["usage-bootstrap-signing"] = "false"
	short := bootstraptoken.NewSecret(bootstraptoken.Token{ID: "short1", Secret: "0123456789abcdef"}, 2*time.Second, time.Now(), "")
	for _, s := range []*corev1.Secret{noSign, short} {
		if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "cluster-info signed with short1", func() bool { return clusterInfo(t, c)["jws-kubeconfig-short1"] != "" })
	eventually(t, "the expired token's Secret to go", func() bool {
		_, err := c.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-short1", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	eventually(t, "the expired token's signature to go", func() bool {
		ids := signatures(clusterInfo(t, c))
		return len(ids) == 1 && ids[0] == "abcdef"
	})

	// A deleted token: its signature goes.
	if err := c.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-abcdef", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no signatures left", func() bool { return len(signatures(clusterInfo(t, c))) == 0 })
}
