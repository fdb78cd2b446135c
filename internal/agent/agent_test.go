package agent

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/image"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "one", "B": "two"}
	for in, want := range map[string]string{
		"plain":        "plain",
		"$(A)":         "one",
		"x-$(A)-$(B)":  "x-one-two",
		"$(MISSING)":   "$(MISSING)",
		"$$(A)":        "$(A)",
		"$":            "$",
		"cost $5":      "cost $5",
		"$(A":          "$(A",
		"$(A)$(A)$$$$": "oneone$$",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	cfg := image.Config{Entrypoint: []string{"/entry"}, Cmd: []string{"default"}}
	vars := map[string]string{"WHO": "world"}
	for _, tc := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/entry", "default"}},
		{nil, []string{"hello", "$(WHO)"}, []string{"/entry", "hello", "world"}},
		{[]string{"sh", "-c"}, nil, []string{"sh", "-c"}},
		{[]string{"echo"}, []string{"$(WHO)"}, []string{"echo", "world"}},
	} {
		c := &corev1.Container{Command: tc.command, Args: tc.args}
		if got := commandLine(c, cfg, vars); !slices.Equal(got, tc.want) {
			t.Errorf("command %v args %v: got %v, want %v", tc.command, tc.args, got, tc.want)
		}
	}
}

func TestContainerIDRoundTrip(t *testing.T) {
	uid := types.UID("7f4d4fbb-b14f-4296-9cdf-537843b1e0cb")
	id := containerID(uid, "web-server", 3)
	gotUID, name, attempt, ok := parseContainerID(id)
	if !ok || gotUID != uid || name != "web-server" || attempt != 3 {
		t.Fatalf("parseContainerID(%q) = %v %v %v %v", id, gotUID, name, attempt, ok)
	}
	if _, _, _, ok := parseContainerID("not-ours"); ok {
		t.Fatal("a foreign ID parsed")
	}
}

func TestPodHostname(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Name = "web-0"
	if h := podHostname(pod); h != "web-0" {
		t.Errorf("hostname %q", h)
	}
	pod.Spec.Hostname = "custom"
	if h := podHostname(pod); h != "custom" {
		t.Errorf("hostname %q", h)
	}
}

// A driver's socket lives under the data directory unless that path is too
// long for a unix socket address; then a short one, the same every time.
func TestSocketPath(t *testing.T) {
	a := &Agent{opts: Options{DataDir: "/var/lib/moorage/agent"}}
	if got := a.socketPath("local.csi.moorage.io"); got != "/var/lib/moorage/agent/plugins/local.csi.moorage.io/csi.sock" {
		t.Errorf("socketPath = %q", got)
	}
	long := &Agent{opts: Options{DataDir: "/" + strings.Repeat("d", 100)}}
	got := long.socketPath("local.csi.moorage.io")
	if len(got) > maxSocketPath || got != long.socketPath("local.csi.moorage.io") || !strings.HasSuffix(got, "/csi.sock") {
		t.Errorf("socketPath for a long data dir = %q", got)
	}
	if other := (&Agent{opts: Options{DataDir: "/" + strings.Repeat("e", 100)}}).socketPath("local.csi.moorage.io"); other == got {
		t.Errorf("two data dirs share the socket %q", got)
	}
}
