package deployment_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/controller/deployment"
)

// kubectl runs the real kubectl on PATH against the test server.
func kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	out, err := runKubectl(t, kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runKubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig, "--namespace", ns}, args...)...)
	// Its discovery cache, away from the user's.
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKubectlRollout drives a Deployment through the real kubectl: rollout
// status, set image, history, undo, scale, pause and resume, restart.
func TestKubectlRollout(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("no kubectl on PATH")
	}
	c, kubeconfig := start(t)
	create(t, c, newDeployment("web", 2))

	out := kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	if !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Fatalf("rollout status:\n%s", out)
	}

	kubectl(t, kubeconfig, "set", "image", "deployment/web", "app=busybox:2")
	kubectl(t, kubeconfig, "annotate", "deployment/web", "kubernetes.io/change-cause=upgrade to 2")
	out = kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	if !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Fatalf("rollout status after set image:\n%s", out)
	}
	eventually(t, "revision 2 with its change cause", func() bool {
		rss := replicaSets(t, c, "web")
		return len(rss) == 2 && rss[1].Annotations["kubernetes.io/change-cause"] == "upgrade to 2"
	})

	out = kubectl(t, kubeconfig, "rollout", "history", "deployment/web")
	if !regexp.MustCompile(`(?m)^REVISION\s+CHANGE-CAUSE\n1\s+<none>\n2\s+upgrade to 2\s*$`).MatchString(out) {
		t.Fatalf("rollout history:\n%s", out)
	}
	out = kubectl(t, kubeconfig, "rollout", "history", "deployment/web", "--revision=1")
	if !strings.Contains(out, "busybox:1") {
		t.Fatalf("rollout history --revision=1:\n%s", out)
	}

	out = kubectl(t, kubeconfig, "rollout", "undo", "deployment/web")
	if !strings.Contains(out, "deployment.apps/web rolled back") {
		t.Fatalf("rollout undo:\n%s", out)
	}
	kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	eventually(t, "revision 3, the template of revision 1", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "3" && d.Spec.Template.Spec.Containers[0].Image == "busybox:1"
	})
	out = kubectl(t, kubeconfig, "rollout", "history", "deployment/web")
	if !regexp.MustCompile(`(?m)^2\s+upgrade to 2\s*\n3\s+<none>\s*$`).MatchString(out) {
		t.Fatalf("rollout history after undo:\n%s", out)
	}
	// Undo to an explicit revision.
	kubectl(t, kubeconfig, "rollout", "undo", "deployment/web", "--to-revision=2")
	kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	eventually(t, "revision 4, the template of revision 2", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "4" && d.Spec.Template.Spec.Containers[0].Image == "busybox:2"
	})

	out = kubectl(t, kubeconfig, "scale", "deployment/web", "--replicas=4")
	if !strings.Contains(out, "deployment.apps/web scaled") {
		t.Fatalf("scale:\n%s", out)
	}
	kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	eventually(t, "4 replicas", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Status.AvailableReplicas == 4
	})

	kubectl(t, kubeconfig, "rollout", "pause", "deployment/web")
	if out, err := runKubectl(t, kubeconfig, "rollout", "undo", "deployment/web"); err == nil || !strings.Contains(out, "you cannot rollback a paused deployment") {
		t.Fatalf("undo of a paused deployment: %v\n%s", err, out)
	}
	kubectl(t, kubeconfig, "set", "image", "deployment/web", "app=busybox:3")
	eventually(t, "Progressing DeploymentPaused", func() bool {
		d := get(t, c, "web")
		return d.Status.ObservedGeneration == d.Generation && condition(d, appsv1.DeploymentProgressing).Reason == deployment.ReasonDeploymentPaused
	})
	if n := len(replicaSets(t, c, "web")); n != 2 {
		t.Fatalf("%d ReplicaSets while paused, want 2", n)
	}
	kubectl(t, kubeconfig, "rollout", "resume", "deployment/web")
	kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")

	kubectl(t, kubeconfig, "rollout", "restart", "deployment/web")
	kubectl(t, kubeconfig, "rollout", "status", "deployment/web", "--timeout=40s")
	eventually(t, "the restart rolled out", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "6" &&
			d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] != "" && d.Status.AvailableReplicas == 4
	})
	d := get(t, c, "web")
	if p := condition(d, appsv1.DeploymentProgressing); p.Status != corev1.ConditionTrue || p.Reason != deployment.ReasonNewReplicaSetAvailable {
		t.Fatalf("Progressing %+v", p)
	}
}
