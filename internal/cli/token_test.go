package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/testserver"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := tokenCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// moorage token create stores upstream's Secret; cluster-info gets signed
// with the token, and an agent's configuration joins with it, then finds
// the kept kubeconfig again without the token.
func TestTokenCreateAndAgentConfig(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.StartIn(t, dir)
	c := testserver.Client(t, srv)
	ctx := t.Context()

	out, err := run(t, "create", "--data-dir", dir, "--ttl", "2h", "--description", "for the test")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	line := strings.TrimSpace(out)
	if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(line) {
		t.Fatalf("token create printed %q", out)
	}
	tok, _ := bootstraptoken.Parse(line)
	s, err := c.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+tok.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
	if s.Type != "bootstrap.kubernetes.io/token" || string(s.Data["token-id"]) != tok.ID || string(s.Data["token-secret"]) != tok.Secret ||
		string(s.Data["usage-bootstrap-authentication"]) != "true" || string(s.Data["usage-bootstrap-signing"]) != "true" ||
		err != nil || exp.Before(time.Now().Add(119*time.Minute)) || exp.After(time.Now().Add(2*time.Hour)) {
		t.Fatalf("secret %s: type %s, data %q", s.Name, s.Type, s.Data)
	}
	var data map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		cm, err := c.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if data = cm.Data; data["jws-kubeconfig-"+tok.ID] != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !bootstraptoken.Verify(data["kubeconfig"], data["jws-kubeconfig-"+tok.ID], tok) {
		t.Fatalf("cluster-info is not signed with the new token: %v", data)
	}

	// The agent's flags: --server and --token join and keep a kubeconfig.
	agentDir := t.TempDir()
	cmd := agentCommand()
	if err := cmd.ParseFlags([]string{"--server", srv.URL, "--token", line}); err != nil {
		t.Fatal(err)
	}
	cmd.SetContext(ctx)
	creds, err := agentConfig(cmd, agentDir, "", srv.URL, line, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// It joined with a node client certificate, which authenticates.
	if creds.node == nil || creds.cfg.BearerToken != "" || creds.cfg.Host != srv.URL {
		t.Fatalf("joined: %s with token %q, node certificate %v", creds.cfg.Host, creds.cfg.BearerToken, creds.node != nil)
	}
	if _, err := kubernetes.NewForConfigOrDie(creds.cfg).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the node certificate does not authenticate: %v", err)
	}
	kept, err := clientcmd.LoadFromFile(filepath.Join(agentDir, "agent.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(agentDir, "agent.kubeconfig")); fi.Mode().Perm() != 0o600 || len(kept.Clusters) != 1 {
		t.Fatalf("kept kubeconfig: mode %v, %+v", fi.Mode(), kept)
	}
	auth := kept.AuthInfos[kept.Contexts[kept.CurrentContext].AuthInfo]
	if auth == nil || len(auth.ClientCertificateData) == 0 || len(auth.ClientKeyData) == 0 || auth.Token != "" {
		t.Fatalf("kept kubeconfig's user: %+v", auth)
	}
	csrs, err := c.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil || len(csrs.Items) != 1 || csrs.Items[0].Spec.Username != "system:bootstrap:"+tok.ID {
		t.Fatalf("certificate signing requests: %v %+v", err, csrs)
	}
	// A restart without --token uses it.
	restart := agentCommand()
	if err := restart.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	again, err := agentConfig(restart, agentDir, filepath.Join(agentDir, "no-such-kubeconfig"), "", "", "node-a", time.Minute)
	if err != nil || again.node == nil || again.cfg.Host != srv.URL {
		t.Fatalf("restart: %v, %+v", err, again)
	}
	// So does a restart with the same --token: no second request.
	restart = agentCommand()
	if err := restart.ParseFlags([]string{"--server", srv.URL, "--token", line}); err != nil {
		t.Fatal(err)
	}
	restart.SetContext(ctx)
	if again, err = agentConfig(restart, agentDir, "", srv.URL, line, "node-a", time.Minute); err != nil || again.node == nil {
		t.Fatalf("restart with --token: %v", err)
	}
	if csrs, _ := c.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); len(csrs.Items) != 1 {
		t.Fatalf("restart with --token asked again: %d requests", len(csrs.Items))
	}
	// Another node name in the same data dir is refused, with the way out.
	restart = agentCommand()
	if err := restart.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := agentConfig(restart, agentDir, "", "", "", "node-b", time.Minute); err == nil || !strings.Contains(err.Error(), "--node-name node-a") {
		t.Fatalf("another node name: %v", err)
	}

	out, err = run(t, "create", "--kubeconfig", srv.Kubeconfig, "--print-join-command", "--ttl", "0")
	if err != nil || !regexp.MustCompile(`^moorage agent --server `+regexp.QuoteMeta(srv.URL)+` --token [a-z0-9]{6}\.[a-z0-9]{16}\n$`).MatchString(out) {
		t.Fatalf("--print-join-command: %v %q", err, out)
	}
	if _, err := run(t, "create", "--kubeconfig", srv.Kubeconfig, "--data-dir", dir); err == nil {
		t.Fatal("--kubeconfig with --data-dir was accepted")
	}
}
