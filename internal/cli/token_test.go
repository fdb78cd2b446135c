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
	cfg, err := agentConfig(cmd, agentDir, "", srv.URL, line)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BearerToken != line || cfg.Host != srv.URL {
		t.Fatalf("joined: %s with %q", cfg.Host, cfg.BearerToken)
	}
	kept, err := clientcmd.LoadFromFile(filepath.Join(agentDir, "agent.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(agentDir, "agent.kubeconfig")); fi.Mode().Perm() != 0o600 || len(kept.Clusters) != 1 {
		t.Fatalf("kept kubeconfig: mode %v, %+v", fi.Mode(), kept)
	}
	// A restart without --token uses it.
	restart := agentCommand()
	if err := restart.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	again, err := agentConfig(restart, agentDir, filepath.Join(agentDir, "no-such-kubeconfig"), "", "")
	if err != nil || again.BearerToken != line {
		t.Fatalf("restart: %v, token %q", err, again.BearerToken)
	}

	out, err = run(t, "create", "--kubeconfig", srv.Kubeconfig, "--print-join-command", "--ttl", "0")
	if err != nil || !regexp.MustCompile(`^moorage agent --server `+regexp.QuoteMeta(srv.URL)+` --token [a-z0-9]{6}\.[a-z0-9]{16}\n$`).MatchString(out) {
		t.Fatalf("--print-join-command: %v %q", err, out)
	}
	if _, err := run(t, "create", "--kubeconfig", srv.Kubeconfig, "--data-dir", dir); err == nil {
		t.Fatal("--kubeconfig with --data-dir was accepted")
	}
}
