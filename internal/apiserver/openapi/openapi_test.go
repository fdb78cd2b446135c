package openapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
)

func TestIndex(t *testing.T) {
	h := testHandler(t)
	rec := get(t, h, "/openapi/v3")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Etag") == "" {
		t.Fatalf("index: %d %v", rec.Code, rec.Header())
	}
	var index struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &index); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k, v := range index.Paths {
		keys = append(keys, k)
		if !strings.HasPrefix(v.ServerRelativeURL, "/openapi/v3/"+k+"?hash=") {
			t.Errorf("%s: url %q", k, v.ServerRelativeURL)
		}
	}
	sort.Strings(keys)
	want := "api/v1 apis/apps/v1 apis/coordination.k8s.io/v1 apis/discovery.k8s.io/v1 apis/events.k8s.io/v1 apis/storage.k8s.io/v1"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("index keys:\n got %s\nwant %s", got, want)
	}
}

func TestCaching(t *testing.T) {
	h := testHandler(t)
	var index struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	_ = json.Unmarshal(get(t, h, "/openapi/v3").Body.Bytes(), &index)
	u := index.Paths["apis/apps/v1"].ServerRelativeURL
	hash := u[strings.Index(u, "hash=")+5:]

	rec := get(t, h, u)
	if rec.Code != 200 || rec.Header().Get("Cache-Control") != "public, immutable" ||
		rec.Header().Get("Etag") != `"`+hash+`"` || rec.Header().Get("Expires") == "" {
		t.Fatalf("with hash: %d %v", rec.Code, rec.Header())
	}
	rec = get(t, h, "/openapi/v3/apis/apps/v1")
	if rec.Code != 200 || rec.Header().Get("Cache-Control") != "" || rec.Header().Get("Etag") != `"`+hash+`"` {
		t.Fatalf("without hash: %d %v", rec.Code, rec.Header())
	}
	rec = get(t, h, "/openapi/v3/apis/apps/v1?hash=STALE")
	if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != u {
		t.Fatalf("stale hash: %d %v", rec.Code, rec.Header())
	}
	req := httptest.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("If-None-Match", `"`+hash+`"`)
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	if rr.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", rr.Code)
	}
	// The same inputs give the same documents (stable hashes across restarts).
	var again struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	_ = json.Unmarshal(get(t, testHandler(t), "/openapi/v3").Body.Bytes(), &again)
	if again.Paths["apis/apps/v1"].ServerRelativeURL != u {
		t.Errorf("hash not stable: %s vs %s", again.Paths["apis/apps/v1"].ServerRelativeURL, u)
	}
}

func TestErrors(t *testing.T) {
	h := testHandler(t)
	for _, c := range []struct {
		method, path, accept string
		code                 int
		reason               string
	}{
		{"GET", "/openapi/v3/apis/batch/v1", "", 404, "NotFound"},
		{"GET", "/openapi/v3/", "", 404, "NotFound"},
		{"GET", "/openapi", "", 404, "NotFound"},
		{"POST", "/openapi/v3/api/v1", "", 405, "MethodNotAllowed"},
		{"GET", "/openapi/v3/api/v1", "application/com.github.proto-openapi.spec.v3@v1.0+protobuf", 406, "NotAcceptable"},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		if c.accept != "" {
			req.Header.Set("Accept", c.accept)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var st struct {
			Kind, APIVersion, Status, Reason string
			Code                             int
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("%s %s: %v: %s", c.method, c.path, err, rec.Body)
		}
		if rec.Code != c.code || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != "Failure" ||
			st.Reason != c.reason || st.Code != c.code {
			t.Errorf("%s %s: %d %+v", c.method, c.path, rec.Code, st)
		}
	}
	rec := get(t, h, "/openapi/v3/api/v1")
	if rec.Code != 200 {
		t.Fatalf("HEAD-less GET: %d", rec.Code)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(scheme.Scheme, []Resource{{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Nope"}, Plural: "nopes"}}); err == nil {
		t.Error("unregistered kind: no error")
	}
	if _, err := New(scheme.Scheme, []Resource{{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Pod"}}}); err == nil {
		t.Error("missing plural: no error")
	}
}

// op returns the operation of method on path p in doc, or nil.
func op(doc anyMap, p, method string) anyMap {
	item, _ := doc["paths"].(anyMap)[p].(anyMap)
	o, _ := item[method].(anyMap)
	return o
}

func hasQueryParam(o anyMap, name string) bool {
	ps, _ := o["parameters"].([]any)
	for _, p := range ps {
		if p := p.(anyMap); p["name"] == name && p["in"] == "query" {
			return true
		}
	}
	return false
}

// TestPatchOperations: what kubectl's query-param verifier and patcher need:
// every PATCH of every kind carries the GVK, fieldValidation among its own
// parameters, and the strategic-merge-patch content type.
func TestPatchOperations(t *testing.T) {
	docs := testDocs(t)
	for _, r := range testResources {
		key := "apis/" + r.GVK.Group + "/" + r.GVK.Version
		if r.GVK.Group == "" {
			key = "api/" + r.GVK.Version
		}
		doc := docs[key]
		prefix := "/" + key
		if r.Namespaced {
			prefix += "/namespaces/{namespace}"
		}
		item := prefix + "/" + r.Plural + "/{name}"
		paths := []string{item}
		for _, s := range r.Subresources {
			if s == "status" || s == "scale" || s == "ephemeralcontainers" {
				paths = append(paths, item+"/"+s)
			}
		}
		for _, p := range paths {
			o := op(doc, p, "patch")
			if o == nil {
				t.Errorf("%s: no patch", p)
				continue
			}
			want := map[string]any{"group": r.GVK.Group, "version": r.GVK.Version, "kind": r.GVK.Kind}
			if strings.HasSuffix(p, "/scale") {
				want = map[string]any{"group": "autoscaling", "version": "v1", "kind": "Scale"}
			}
			if fmt.Sprint(o["x-kubernetes-group-version-kind"]) != fmt.Sprint(want) {
				t.Errorf("%s: gvk %v", p, o["x-kubernetes-group-version-kind"])
			}
			for _, q := range []string{"fieldValidation", "fieldManager", "dryRun", "force"} {
				if !hasQueryParam(o, q) {
					t.Errorf("%s: patch lacks %s", p, q)
				}
			}
			ct := o["requestBody"].(anyMap)["content"].(anyMap)
			for _, m := range patchMediaTypes {
				if ct[m] == nil {
					t.Errorf("%s: patch lacks %s", p, m)
				}
			}
			if o["x-kubernetes-action"] != "patch" || o["operationId"] == "" {
				t.Errorf("%s: %v %v", p, o["x-kubernetes-action"], o["operationId"])
			}
		}
	}
	if id := op(docs["api/v1"], "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}", "patch")["operationId"]; id != "patchCoreV1NamespacedPersistentVolumeClaim" {
		t.Errorf("operationId %v", id)
	}
	if id := op(docs["apis/apps/v1"], "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale", "put")["operationId"]; id != "replaceAppsV1NamespacedStatefulSetScale" {
		t.Errorf("operationId %v", id)
	}
	if id := op(docs["apis/storage.k8s.io/v1"], "/apis/storage.k8s.io/v1/storageclasses", "delete")["operationId"]; id != "deleteStorageV1CollectionStorageClass" {
		t.Errorf("operationId %v", id)
	}
}

// TestOperations checks the shape of the other operations of one resource.
func TestOperations(t *testing.T) {
	docs := testDocs(t)
	doc := docs["api/v1"]
	coll := "/api/v1/namespaces/{namespace}/persistentvolumeclaims"
	for _, c := range []struct {
		path, method, id, action string
		params                   []string
	}{
		{coll, "get", "listCoreV1NamespacedPersistentVolumeClaim", "list",
			[]string{"allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch"}},
		{coll, "post", "createCoreV1NamespacedPersistentVolumeClaim", "post", []string{"dryRun", "fieldManager", "fieldValidation"}},
		{coll, "delete", "deleteCoreV1CollectionNamespacedPersistentVolumeClaim", "deletecollection", nil},
		{coll + "/{name}", "get", "readCoreV1NamespacedPersistentVolumeClaim", "get", nil},
		{coll + "/{name}", "put", "replaceCoreV1NamespacedPersistentVolumeClaim", "put", []string{"dryRun", "fieldManager", "fieldValidation"}},
		{coll + "/{name}", "delete", "deleteCoreV1NamespacedPersistentVolumeClaim", "delete", []string{"dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy"}},
		{coll + "/{name}/status", "get", "readCoreV1NamespacedPersistentVolumeClaimStatus", "get", nil},
		{"/api/v1/persistentvolumeclaims", "get", "listCoreV1PersistentVolumeClaimForAllNamespaces", "list", nil},
		{"/api/v1/watch/namespaces/{namespace}/persistentvolumeclaims/{name}", "get", "watchCoreV1NamespacedPersistentVolumeClaim", "watch", nil},
		{"/api/v1/persistentvolumes/{name}", "patch", "patchCoreV1PersistentVolume", "patch", []string{"dryRun", "fieldManager", "fieldValidation", "force"}},
		{"/api/v1/namespaces/{namespace}/pods/{name}/log", "get", "readCoreV1NamespacedPodLog", "get", nil},
		{"/api/v1/namespaces/{namespace}/pods/{name}/exec", "post", "connectCoreV1PostNamespacedPodExec", "connect", nil},
		{"/api/v1/namespaces/{namespace}/pods/{name}/eviction", "post", "createCoreV1NamespacedPodEviction", "post", nil},
		{"/api/v1/namespaces/{name}/finalize", "put", "replaceCoreV1NamespaceFinalize", "put", nil},
	} {
		o := op(doc, c.path, c.method)
		if o == nil {
			t.Errorf("%s %s missing", c.method, c.path)
			continue
		}
		if o["operationId"] != c.id || o["x-kubernetes-action"] != c.action {
			t.Errorf("%s %s: %v %v", c.method, c.path, o["operationId"], o["x-kubernetes-action"])
		}
		for _, p := range c.params {
			if !hasQueryParam(o, p) {
				t.Errorf("%s %s: lacks %s", c.method, c.path, p)
			}
		}
	}
	// name, namespace and pretty are shared by all operations of the item path.
	item := doc["paths"].(anyMap)[coll+"/{name}"].(anyMap)
	var names []string
	for _, p := range item["parameters"].([]any) {
		names = append(names, p.(anyMap)["name"].(string)+"/"+p.(anyMap)["in"].(string))
	}
	if got := strings.Join(names, " "); got != "name/path namespace/path pretty/query" {
		t.Errorf("item path parameters: %s", got)
	}
	// The list response references the list kind.
	ref := op(doc, coll, "get")["responses"].(anyMap)["200"].(anyMap)["content"].(anyMap)["application/json"].(anyMap)["schema"].(anyMap)["$ref"]
	if ref != refPrefix+"io.k8s.api.core.v1.PersistentVolumeClaimList" {
		t.Errorf("list response %v", ref)
	}
	if s := op(docs["apis/apps/v1"], "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale", "get"); s == nil ||
		s["responses"].(anyMap)["200"].(anyMap)["content"].(anyMap)["application/json"].(anyMap)["schema"].(anyMap)["$ref"] != refPrefix+"io.k8s.api.autoscaling.v1.Scale" {
		t.Errorf("scale get: %v", s)
	}
}

// TestRefsResolve: every $ref in every document points at a component of
// that same document, and every component is used.
func TestRefsResolve(t *testing.T) {
	for key, doc := range testDocs(t) {
		schemas := doc["components"].(anyMap)["schemas"].(anyMap)
		used := map[string]bool{}
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case anyMap:
				for k, e := range x {
					if k == "$ref" {
						name := strings.TrimPrefix(e.(string), refPrefix)
						if _, ok := schemas[name]; !ok || name == e {
							t.Errorf("%s: dangling $ref %v", key, e)
						}
						used[name] = true
					}
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(doc)
		for name := range schemas {
			if !used[name] {
				t.Errorf("%s: unused component %s", key, name)
			}
		}
	}
}

// TestMinimalScheme: a scheme with only apps/v1 still gets the autoscaling/v1
// Scale schema (with its GVK) for the scale subresource.
func TestMinimalScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := appsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	h, err := New(s, []Resource{{GVK: appsv1.SchemeGroupVersion.WithKind("StatefulSet"), Plural: "statefulsets",
		Namespaced: true, Subresources: []string{"status", "scale", "unknown"}}})
	if err != nil {
		t.Fatal(err)
	}
	var doc anyMap
	if err := json.Unmarshal(get(t, h, "/openapi/v3/apis/apps/v1").Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	scale := doc["components"].(anyMap)["schemas"].(anyMap)["io.k8s.api.autoscaling.v1.Scale"]
	if got, _ := json.Marshal(at(scale, "x-kubernetes-group-version-kind")); string(got) != `[{"group":"autoscaling","kind":"Scale","version":"v1"}]` {
		t.Errorf("Scale gvk: %s", got)
	}
	if op(doc, "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale", "patch") == nil ||
		op(doc, "/apis/apps/v1/namespaces/{namespace}/statefulsets", "delete") == nil {
		t.Error("missing operations (empty Verbs means all verbs)")
	}
	if doc["paths"].(anyMap)["/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/unknown"] != nil {
		t.Error("unknown subresource documented")
	}
	if get(t, h, "/openapi/v3/api/v1").Code != http.StatusNotFound {
		t.Error("api/v1 served without core resources")
	}
}
