package openapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
)

var allVerbs = []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

func res(group, version, kind, plural string, namespaced bool, subs ...string) Resource {
	return Resource{
		GVK:        schema.GroupVersionKind{Group: group, Version: version, Kind: kind},
		ListGVK:    schema.GroupVersionKind{Group: group, Version: version, Kind: kind + "List"},
		Plural:     plural,
		Namespaced: namespaced,
		Verbs:      allVerbs, Subresources: subs,
	}
}

// testResources is roughly what moorage serves.
var testResources = []Resource{
	res("", "v1", "Pod", "pods", true, "status", "log", "exec", "attach", "portforward", "eviction", "binding", "ephemeralcontainers"),
	res("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, "status"),
	res("", "v1", "PersistentVolume", "persistentvolumes", false, "status"),
	res("", "v1", "ConfigMap", "configmaps", true),
	res("", "v1", "Secret", "secrets", true),
	res("", "v1", "Service", "services", true, "status"),
	res("", "v1", "Endpoints", "endpoints", true),
	res("", "v1", "Event", "events", true),
	res("", "v1", "Namespace", "namespaces", false, "status", "finalize"),
	res("", "v1", "Node", "nodes", false, "status"),
	res("", "v1", "ServiceAccount", "serviceaccounts", true, "token"),
	res("apps", "v1", "StatefulSet", "statefulsets", true, "status", "scale"),
	res("apps", "v1", "DaemonSet", "daemonsets", true, "status"),
	res("apps", "v1", "Deployment", "deployments", true, "status", "scale"),
	res("apps", "v1", "ReplicaSet", "replicasets", true, "status", "scale"),
	res("apps", "v1", "ControllerRevision", "controllerrevisions", true),
	res("storage.k8s.io", "v1", "StorageClass", "storageclasses", false),
	res("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false),
	res("storage.k8s.io", "v1", "CSINode", "csinodes", false),
	res("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", false, "status"),
	res("coordination.k8s.io", "v1", "Lease", "leases", true),
	res("events.k8s.io", "v1", "Event", "events", true),
	res("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
}

// testHandler builds the handler for testResources.
func testHandler(t testing.TB) http.Handler {
	t.Helper()
	h, err := New(scheme.Scheme, testResources)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t testing.TB, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

type anyMap = map[string]any

// testDocs fetches every document listed in the index, parsed, by key
// ("api/v1", "apis/apps/v1").
func testDocs(t testing.TB) map[string]anyMap {
	t.Helper()
	h := testHandler(t)
	var index struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(get(t, h, "/openapi/v3").Body.Bytes(), &index); err != nil {
		t.Fatal(err)
	}
	docs := map[string]anyMap{}
	for k, v := range index.Paths {
		rec := get(t, h, v.ServerRelativeURL)
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", v.ServerRelativeURL, rec.Code, body)
		}
		var d anyMap
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
		docs[k] = d
	}
	return docs
}
