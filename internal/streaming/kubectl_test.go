package streaming_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moorage/moorage/internal/streaming"
)

// kubectlDir holds one kubectl binary per minor version (kubectl.1.27 ...).
const kubectlDir = "/usr/lib/google-cloud-sdk/bin"

// These tests run the real kubectl binaries: 1.27 to 1.29 speak SPDY, 1.30
// and later WebSocket v5. In front of ServeExec sits the least of an API
// server kubectl needs (discovery and one running pod, "p"), and the
// "container" is this host: the Executor runs the command with os/exec.
func TestKubectl(t *testing.T) {
	var versions []string
	for minor := 27; minor <= 33; minor++ {
		v := fmt.Sprintf("1.%d", minor)
		if _, err := os.Stat(filepath.Join(kubectlDir, "kubectl."+v)); err == nil {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		t.Skipf("no kubectl.1.* in %s", kubectlDir)
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar for kubectl cp")
	}

	api := &fakeAPIServer{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
contexts: [{name: c, context: {cluster: c, namespace: default}}]
current-context: c
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			api.upgrades() // forget earlier versions' requests
			kubectl := func(stdin io.Reader, args ...string) (stdout, stderr string, code int) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, filepath.Join(kubectlDir, "kubectl."+v), append([]string{"--kubeconfig", kubeconfig}, args...)...)
				cmd.Env = append(os.Environ(), "HOME="+dir, "KUBECACHEDIR="+filepath.Join(dir, "cache-"+v))
				cmd.Stdin = stdin
				var out, errOut bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errOut
				err := cmd.Run()
				var exit *exec.ExitError
				if err != nil && !errors.As(err, &exit) {
					t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
				}
				return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
			}

			stdout, stderr, code := kubectl(nil, "exec", "p", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
			// Under heavy load kubectl 1.32 once logged "Unknown stream id 1,
			// discarding message" (its websocket client) before the command's
			// stderr, with stdout complete: its own log lines are not the
			// command's output. The frame it discarded is the empty "ready"
			// message the server sends on stdout at once, as the kubelet
			// does (websocket.go): it can arrive before kubectl has set up
			// its stdout stream, and carries nothing.
			stderr = kubectlLogLine.ReplaceAllString(stderr, "")
			if stdout != "out\n" || !strings.HasPrefix(stderr, "err\n") || code != 3 {
				t.Errorf("exec exit 3: stdout %q, stderr %q, exit %d; want out, err, 3", stdout, stderr, code)
			}

			stdout, stderr, code = kubectl(strings.NewReader("hello\n"), "exec", "-i", "p", "--", "tr", "a-z", "A-Z")
			if stdout != "HELLO\n" || code != 0 {
				t.Errorf("exec -i: stdout %q, stderr %q, exit %d; want HELLO, 0", stdout, stderr, code)
			}

			const notFound = "Internal error occurred: error executing command in container: exec: \"no-such-command\""
			if _, stderr, code = kubectl(nil, "exec", "p", "--", "no-such-command"); !strings.Contains(stderr, notFound) || code == 0 {
				t.Errorf("exec of a missing command: stderr %q, exit %d; want %q, non-zero", stderr, code, notFound)
			}

			// kubectl cp in both directions: exec of tar, binary through
			// stdin and stdout.
			local := t.TempDir()
			payload := make([]byte, 256<<10)
			if _, err := rand.Read(payload); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(local, "in"), payload, 0o600); err != nil {
				t.Fatal(err)
			}
			remote := t.TempDir()
			if _, stderr, code = kubectl(nil, "cp", filepath.Join(local, "in"), "p:"+filepath.Join(remote, "copied")); code != 0 {
				t.Fatalf("cp to pod: exit %d: %s", code, stderr)
			}
			if got, err := os.ReadFile(filepath.Join(remote, "copied")); err != nil || !bytes.Equal(got, payload) {
				t.Errorf("cp to pod: %d bytes arrived (%v), want %d", len(got), err, len(payload))
			}
			if _, stderr, code = kubectl(nil, "cp", "p:"+filepath.Join(remote, "copied"), filepath.Join(local, "back")); code != 0 {
				t.Fatalf("cp from pod: exit %d: %s", code, stderr)
			}
			if got, err := os.ReadFile(filepath.Join(local, "back")); err != nil || !bytes.Equal(got, payload) {
				t.Errorf("cp from pod: %d bytes arrived (%v), want %d", len(got), err, len(payload))
			}

			// Each version must have used its own transport, no fallback.
			want := "websocket"
			if v < "1.30" {
				want = "SPDY/3.1"
			}
			seen := api.upgrades()
			if len(seen) == 0 {
				t.Error("no exec request was recorded")
			}
			for _, got := range seen {
				if !strings.EqualFold(got, want) {
					t.Errorf("exec request with Upgrade %q; kubectl %s should use only %s", got, v, want)
				}
			}
		})
	}
}

// fakeAPIServer answers discovery, GET of pod "p", and its exec
// subresource, and records the Upgrade header of exec requests.
type fakeAPIServer struct {
	mu       sync.Mutex
	upgraded []string
}

// upgrades returns and forgets the recorded Upgrade headers.
func (f *fakeAPIServer) upgrades() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := f.upgraded
	f.upgraded = nil
	return got
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const pod = `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"default"},` +
		`"spec":{"containers":[{"name":"c","image":"x"}]},"status":{"phase":"Running"}}`
	bodies := map[string]string{
		"/api":  `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}`,
		"/apis": `{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`,
		"/api/v1": `{"kind":"APIResourceList","groupVersion":"v1","resources":[` +
			`{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get"]},` +
			`{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]}]}`,
		"/api/v1/namespaces/default/pods/p": pod,
	}
	if body, ok := bodies[r.URL.Path]; ok {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
		return
	}
	if r.URL.Path != "/api/v1/namespaces/default/pods/p/exec" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	f.upgraded = append(f.upgraded, r.Header.Get("Upgrade"))
	f.mu.Unlock()
	opts, err := streaming.OptionsFromRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	streaming.ServeExec(w, r, opts, func(ctx context.Context, s streaming.Session) (int, error) {
		return hostExec(ctx, opts.Command, s)
	}, 0, 0)
}

// hostExec runs argv on this host with the session's streams.
func hostExec(ctx context.Context, argv []string, s streaming.Session) (int, error) {
	if len(argv) == 0 {
		return 0, errors.New("no command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if s.Stdin != nil {
		cmd.Stdin = s.Stdin
	}
	if s.Stdout != nil {
		cmd.Stdout = s.Stdout
	}
	if s.Stderr != nil {
		cmd.Stderr = s.Stderr
	}
	// Stop copying stdin once the process is gone, even if the client
	// never ends it.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return exit.ExitCode(), nil
	}
	return 0, err
}

// kubectlLogLine is a klog line of kubectl's own (E1122 08:00:21.312596 ...).
var kubectlLogLine = regexp.MustCompile(`(?m)^[EWI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [a-z_]+\.go:\d+\] .*\n`)
