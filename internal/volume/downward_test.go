package volume

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func downwardPod() *corev1.Pod {
	pod := newPod("web-0")
	pod.UID = "6f1c2f44-0c5e-4d43-9d3b-2f1f3c1b7a11"
	pod.Labels = map[string]string{"app": "web", "tier": "front"}
	pod.Annotations = map[string]string{
		"zeta":                  "last",
		"build":                 "two\nlines",
		"example.com/quote":     `say "hi"`,
		"kubernetes.io/created": "",
	}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
	}
	return pod
}

func TestPodFieldValues(t *testing.T) {
	pod := downwardPod()
	for path, want := range map[string]string{
		"metadata.name":      "web-0",
		"metadata.namespace": "default",
		"metadata.uid":       "6f1c2f44-0c5e-4d43-9d3b-2f1f3c1b7a11",
		"metadata.labels":    "app=\"web\"\ntier=\"front\"",
		// Sorted by key, values Go-quoted, no final newline.
		"metadata.annotations":                      "build=\"two\\nlines\"\nexample.com/quote=\"say \\\"hi\\\"\"\nkubernetes.io/created=\"\"\nzeta=\"last\"",
		"metadata.labels['app']":                    "web",
		"metadata.labels['missing']":                "",
		"metadata.annotations['zeta']":              "last",
		"metadata.annotations['Zeta']":              "",
		"metadata.annotations['build']":             "two\nlines",
		"metadata.annotations['example.com/quote']": `say "hi"`,
	} {
		got, err := PodFieldValue(pod, path)
		if err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", path, got, err, want)
		}
	}
	for path, want := range map[string]string{
		"spec.nodeName":               "unsupported fieldPath: spec.nodeName",
		"status.podIP":                "unsupported fieldPath: status.podIP",
		"metadata.name['x']":          `fieldPath "metadata.name['x']" does not support subscript`,
		"metadata.labels['bad key!']": "invalid key subscript in metadata.labels['bad key!']: ",
		"metadata.annotations['-x-']": "invalid key subscript in metadata.annotations['-x-']: ",
	} {
		_, err := PodFieldValue(pod, path)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", path, err, want)
		}
	}
}

func TestContainerResourceValues(t *testing.T) {
	pod := downwardPod()
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	q := resource.MustParse
	for _, tc := range []struct {
		resource string
		divisor  resource.Quantity
		want     string
	}{
		{"limits.memory", resource.Quantity{}, "67108864"},
		{"limits.memory", q("1Mi"), "64"},
		{"limits.memory", q("1Gi"), "1"}, // rounded up
		{"requests.memory", q("1Mi"), "32"},
		{"requests.cpu", q("1m"), "250"},
		{"requests.cpu", resource.Quantity{}, "1"}, // 0.25 core, rounded up
		{"limits.cpu", resource.Quantity{}, "4"},   // no limit: the node's allocatable
		{"limits.ephemeral-storage", q("1Gi"), "100"},
		{"requests.ephemeral-storage", resource.Quantity{}, "0"},
		{"limits.hugepages-2Mi", resource.Quantity{}, "0"},
	} {
		got, err := ContainerResourceValue(&corev1.ResourceFieldSelector{ContainerName: "app", Resource: tc.resource, Divisor: tc.divisor}, pod, alloc)
		if err != nil || got != tc.want {
			t.Errorf("%s / %s = %q (%v), want %s", tc.resource, tc.divisor.String(), got, err, tc.want)
		}
	}
	if _, err := ContainerResourceValue(&corev1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.cpu"}, pod, alloc); err == nil || err.Error() != "container nope not found" {
		t.Errorf("missing container: %v", err)
	}
	if _, err := ContainerResourceValue(&corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.gpu"}, pod, alloc); err == nil || err.Error() != "unsupported container resource : limits.gpu" {
		t.Errorf("unknown resource: %v", err)
	}
}

func TestDownwardAPIVolume(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{NodeAllocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}})
	vol := corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
		{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}, Mode: ptr(int32(0o600))},
		{Path: "limits/cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
	}}}}
	pod := downwardPod()
	pod.Spec.Volumes = []corev1.Volume{vol}
	mt := mustSetUp(t, e.m, pod)["podinfo"]
	if !strings.HasSuffix(mt.HostPath, "/volumes/kubernetes.io~downward-api/podinfo") || !mt.ReadOnly {
		t.Fatalf("Mounted = %+v", mt)
	}
	if got := readFile(t, filepath.Join(mt.HostPath, "labels")); got != "app=\"web\"\ntier=\"front\"" {
		t.Errorf("labels file = %q", got)
	}
	if got := readFile(t, filepath.Join(mt.HostPath, "limits/cpu")); got != "2000" {
		t.Errorf("limits/cpu = %q, want the node's 2 cores in millicores", got)
	}
	if fi, _ := statT(t, filepath.Join(mt.HostPath, "annotations")); fi.Mode() != 0o600 {
		t.Errorf("annotations mode %v", fi.Mode())
	}

	// Labels change on the pod: Update rewrites the file.
	pod.Labels["tier"] = "back"
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mt.HostPath, "labels")); got != "app=\"web\"\ntier=\"back\"" {
		t.Errorf("labels after Update = %q", got)
	}

	bad := downwardPod()
	bad.Spec.Volumes = []corev1.Volume{{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
		{Path: "node", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}},
		{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}},
	}}}}}
	want := `MountVolume.SetUp failed for volume "podinfo" : [unsupported fieldPath: spec.nodeName, unsupported fieldPath: status.podIP]`
	if got := setUpErr(t, e.m, bad); got != want {
		t.Errorf("env-only fields in a volume: %q, want %q", got, want)
	}
}

// fakeTokens issues numbered tokens that expire after the requested
// lifetime, on a clock the test moves.
type fakeTokens struct {
	mu       sync.Mutex
	now      time.Time
	issued   int
	requests []*authenticationv1.TokenRequest
}

func (f *fakeTokens) Token(_ context.Context, namespace, account string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issued++
	f.requests = append(f.requests, req.DeepCopy())
	out := req.DeepCopy()
	out.Status.Token = fmt.Sprintf("token-%d-for-%s/%s", f.issued, namespace, account)
	out.Status.ExpirationTimestamp = metav1.NewTime(f.now.Add(time.Duration(*req.Spec.ExpirationSeconds) * time.Second))
	return out, nil
}

func (f *fakeTokens) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeTokens) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestProjectedVolume(t *testing.T) {
	requireRoot(t)
	tokens := &fakeTokens{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, Options{TokenSource: tokens, Now: tokens.clock})
	e.get.putSecret(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "mysecret"}, Data: map[string][]byte{"username": []byte("admin")}})
	e.get.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "myconfigmap"}, Data: map[string]string{"config": "c=1"}})
	vol := corev1.Volume{Name: "all-in-one", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr(int32(0o444)),
		Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "mysecret"},
				Items: []corev1.KeyToPath{{Key: "username", Path: "my-group/my-username"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			}}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "myconfigmap"},
				Items: []corev1.KeyToPath{{Key: "config", Path: "my-group/my-config"}}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault", ExpirationSeconds: ptr(int64(3600))}},
		},
	}}}
	pod := newPod("web", vol)
	pod.Labels = map[string]string{"app": "web"}
	pod.Spec.ServiceAccountName = "builder"
	mt := mustSetUp(t, e.m, pod)["all-in-one"]
	if !strings.HasSuffix(mt.HostPath, "/volumes/kubernetes.io~projected/all-in-one") || !mt.ReadOnly {
		t.Fatalf("Mounted = %+v", mt)
	}
	if line := mountLine(t, mt.HostPath); !strings.Contains(line, " - tmpfs ") {
		t.Errorf("a projected volume lives on tmpfs: %q", line)
	}
	dir := mt.HostPath
	for path, want := range map[string]string{
		"my-group/my-username": "admin",
		"my-group/my-config":   "c=1",
		"labels":               `app="web"`,
		"token":                "token-1-for-default/builder",
	} {
		if got := readFile(t, filepath.Join(dir, path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
		if fi, _ := statT(t, filepath.Join(dir, path)); fi.Mode() != 0o444 {
			t.Errorf("%s mode %v, want the defaultMode 0444", path, fi.Mode())
		}
	}
	req := tokens.requests[0]
	if len(req.Spec.Audiences) != 1 || req.Spec.Audiences[0] != "vault" || req.Spec.BoundObjectRef == nil ||
		req.Spec.BoundObjectRef.Kind != "Pod" || req.Spec.BoundObjectRef.UID != pod.UID || *req.Spec.ExpirationSeconds != 3600 {
		t.Errorf("token request %+v: want audience vault, bound to the pod, 3600 s", req.Spec)
	}

	// Before 80% of the lifetime: the same token, nothing rewritten.
	tokens.advance(40 * time.Minute)
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "token")); got != "token-1-for-default/builder" {
		t.Errorf("token refreshed too early: %q", got)
	}
	// Past 80%: a new token.
	tokens.advance(10 * time.Minute)
	if err := e.m.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "token")); got != "token-2-for-default/builder" {
		t.Errorf("token not refreshed past 80%% of its life: %q", got)
	}

	// fsGroup: the token is 0600 before ownership adds group read.
	withGroup := newPod("grouped", vol)
	withGroup.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(3000))}
	gdir := mustSetUp(t, e.m, withGroup)["all-in-one"].HostPath
	if fi, st := statT(t, filepath.Join(gdir, "token")); fi.Mode() != 0o640 || st.Gid != 3000 {
		t.Errorf("token with fsGroup: mode %v gid %d, want 0640 gid 3000", fi.Mode(), st.Gid)
	}
	// One run-as user for every container: the token is theirs.
	withUser := newPod("user", vol)
	withUser.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1001))}
	udir := mustSetUp(t, e.m, withUser)["all-in-one"].HostPath
	if fi, st := statT(t, filepath.Join(udir, "token")); fi.Mode() != 0o600 || st.Uid != 1001 {
		t.Errorf("token with a single run-as user: mode %v uid %d, want 0600 uid 1001", fi.Mode(), st.Uid)
	}

	// Without a token source, the failure says so.
	noTokens := newEnv(t, Options{})
	noTokens.m.get = e.get
	got := setUpErr(t, noTokens.m, newPod("p", vol))
	if !strings.Contains(got, `MountVolume.SetUp failed for volume "all-in-one" : cannot write the token of service account default/default at "token": this agent has no token source`) {
		t.Errorf("without a TokenSource: %q", got)
	}
}
