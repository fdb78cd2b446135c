package openapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"
)

const kubectlDir = "/usr/lib/google-cloud-sdk/bin"

var shortNames = map[string][]string{
	"persistentvolumeclaims": {"pvc"}, "persistentvolumes": {"pv"}, "statefulsets": {"sts"},
	"deployments": {"deploy"}, "configmaps": {"cm"}, "pods": {"po"}, "storageclasses": {"sc"},
}

// fakeAPIServer serves the OpenAPI handler plus just enough legacy
// discovery for kubectl, and records the writes it receives.
type fakeAPIServer struct {
	*httptest.Server
	mu     sync.Mutex
	writes []string // "METHOD path?query"
}

// kubectl 1.27 and 1.28 GET /openapi/v2 (as gnostic protobuf) before
// anything else in explain, create -f, apply -f, and give up on a 404;
// given any valid v2 document, they go on to use the v3 documents. With
// stubV2 the fake answers /openapi/v2 with an empty v2 document, so those
// versions can be checked against the v3 documents too.
func newFakeAPIServer(t *testing.T, stubV2 bool) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{}
	mux := http.NewServeMux()
	oa := testHandler(t)
	mux.Handle("/openapi/", oa)
	if stubV2 {
		doc, err := openapi_v2.ParseDocument([]byte(`{"swagger":"2.0","info":{"title":"Kubernetes","version":"unversioned"},"paths":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		pb, err := proto.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		mux.HandleFunc("GET /openapi/v2", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
			_, _ = w.Write(pb)
		})
	}
	reply := func(path string, v any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	reply("/version", map[string]string{"major": "1", "minor": "33", "gitVersion": "v1.33.0-moorage", "platform": "linux/amd64"})
	reply("/api", metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: "127.0.0.1"}}})
	lists := map[schema.GroupVersion]*metav1.APIResourceList{}
	groups := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, r := range testResources {
		gv := r.GVK.GroupVersion()
		l := lists[gv]
		if l == nil {
			l = &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
			lists[gv] = l
			if gv.Group != "" {
				gvd := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
				groups.Groups = append(groups.Groups, metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{gvd}, PreferredVersion: gvd})
			}
		}
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.Plural, SingularName: strings.ToLower(r.GVK.Kind),
			Namespaced: r.Namespaced, Kind: r.GVK.Kind, Verbs: r.Verbs, ShortNames: shortNames[r.Plural]})
	}
	reply("/apis", groups)
	for gv, l := range lists {
		p := "/apis/" + gv.String()
		if gv.Group == "" {
			p = "/api/" + gv.Version
		}
		reply(p, l)
	}
	mux.HandleFunc("POST /api/v1/namespaces/default/configmaps", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.writes = append(f.writes, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		f.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPIServer) restConfig() *rest.Config {
	return &rest.Config{Host: f.URL, QPS: -1}
}

// TestClientLibraries reads the documents through client-go's openapi3
// root and cli-runtime's query-param verifier, as kubectl does.
func TestClientLibraries(t *testing.T) {
	f := newFakeAPIServer(t, false)
	dc, err := discovery.NewDiscoveryClientForConfig(f.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(f.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	root := openapi3.NewRoot(dc.OpenAPIV3())
	gvs, err := root.GroupVersions()
	if err != nil || len(gvs) != 6 {
		t.Fatalf("GroupVersions: %v %v", gvs, err)
	}
	spec, err := root.GVSpec(schema.GroupVersion{Group: "apps", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if s := spec.Components.Schemas["io.k8s.api.apps.v1.StatefulSetSpec"]; s == nil || s.Properties["updateStrategy"].Description == "" {
		t.Errorf("StatefulSetSpec: %+v", s)
	}
	verifier := resource.NewQueryParamVerifierV3(dyn, dc.OpenAPIV3(), resource.QueryParamFieldValidation)
	for _, r := range testResources {
		if err := verifier.HasSupport(r.GVK); err != nil {
			t.Errorf("%v: %v", r.GVK, err)
		}
	}
	if err := verifier.HasSupport(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Nope"}); err == nil {
		t.Error("unknown kind supported")
	}
}

// kubectl runs one of the real kubectl binaries against f, with an empty
// cache and home directory; it skips the test when the binary is absent.
func (f *fakeAPIServer) kubectl(t *testing.T, version string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(kubectlDir, "kubectl."+version)
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed: skipping the real-kubectl check", bin)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: default}}]
current-context: fake
`, f.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--kubeconfig", kubeconfig)...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "KUBECACHEDIR=" + filepath.Join(dir, "cache"), "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestKubectlExplain(t *testing.T) {
	f, withV2 := newFakeAPIServer(t, false), newFakeAPIServer(t, true)
	for _, c := range []struct {
		version string
		server  *fakeAPIServer
		args    []string
		want    []string
	}{
		{"1.33", f, []string{"explain", "pvc.spec.resources"}, []string{
			"KIND:       PersistentVolumeClaim", "VERSION:    v1", "FIELD: resources <VolumeResourceRequirements>",
			"resources represents the minimum resources the volume should have",
			"limits\t<map[string]Quantity>", "requests\t<map[string]Quantity>", "Requests describes the minimum amount"}},
		{"1.29", f, []string{"explain", "statefulsets.spec.updateStrategy"}, []string{
			"GROUP:      apps", "KIND:       StatefulSet", "FIELD: updateStrategy <StatefulSetUpdateStrategy>",
			"updateStrategy indicates the StatefulSetUpdateStrategy",
			"rollingUpdate\t<RollingUpdateStatefulSetStrategy>", "type\t<string>"}},
		{"1.27", withV2, []string{"explain", "statefulsets.spec.updateStrategy"}, []string{
			"GROUP:      apps", "KIND:       StatefulSet", "FIELD: updateStrategy <StatefulSetUpdateStrategy>",
			"updateStrategy indicates the StatefulSetUpdateStrategy",
			"rollingUpdate\t<RollingUpdateStatefulSetStrategy>", "type\t<string>"}},
		{"1.30", f, []string{"explain", "deployments.spec.strategy.rollingUpdate"}, []string{
			"maxSurge\t<IntOrString>", "maxUnavailable\t<IntOrString>"}},
		{"1.32", f, []string{"explain", "pods.spec.containers"}, []string{
			"FIELD: containers <[]Container>", "name\t<string> -required-", "image\t<string>", "ports\t<[]ContainerPort>"}},
		{"1.33", f, []string{"explain", "sc"}, []string{
			"GROUP:      storage.k8s.io", "KIND:       StorageClass", "StorageClass describes the parameters",
			"provisioner\t<string> -required-", "metadata\t<ObjectMeta>"}},
	} {
		out, err := c.server.kubectl(t, c.version, c.args...)
		if err != nil {
			t.Errorf("kubectl.%s %s: %v\n%s", c.version, strings.Join(c.args, " "), err, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl.%s %s: output lacks %q:\n%s", c.version, strings.Join(c.args, " "), w, out)
			}
		}
	}
	// kubectl 1.27 reads /openapi/v2 first: the handler's own empty v2
	// document lets it go on to the v3 documents.
	bare := newFakeAPIServer(t, false)
	if out, err := bare.kubectl(t, "1.27", "explain", "statefulsets.spec.updateStrategy"); err != nil || !strings.Contains(out, "rollingUpdate") {
		t.Errorf("kubectl.1.27 explain against the handler alone: %v\n%s", err, out)
	}
}

// TestKubectlCreateValidatesOnServer: with the documents, kubectl's default
// --validate=strict leaves validation to the server (fieldValidation=Strict)
// instead of failing to download OpenAPI.
func TestKubectlCreateValidatesOnServer(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "cm.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		version string
		stubV2  bool
	}{{"1.33", false}, {"1.29", false}, {"1.28", false}} {
		f := newFakeAPIServer(t, c.stubV2)
		out, err := f.kubectl(t, c.version, "create", "-f", manifest)
		if err != nil || !strings.Contains(out, "configmap/x created") {
			t.Errorf("kubectl.%s create: %v\n%s", c.version, err, out)
		}
		f.mu.Lock()
		if len(f.writes) != 1 || !strings.Contains(f.writes[0], "fieldValidation=Strict") {
			t.Errorf("kubectl.%s: writes %v, want one with fieldValidation=Strict", c.version, f.writes)
		}
		f.mu.Unlock()
	}
}
