package apiserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/testserver"
)

// raw sends one request to srv with the admin token and returns the status,
// the Warning headers and the body.
func raw(t *testing.T, srv *app.Server, method, path, contentType, body string) (int, []string, string) {
	t.Helper()
	hc, err := rest.HTTPClientFor(srv.Loopback)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Loopback.BearerToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Values("Warning"), string(b)
}

// notRootCA selects the ConfigMaps a test made: every namespace also holds
// kube-root-ca.crt, as upstream's.
const notRootCA = "metadata.name!=kube-root-ca.crt"

func TestFieldValidationDirectives(t *testing.T) {
	srv := testserver.Start(t)
	const cms = "/api/v1/namespaces/default/configmaps"
	body := func(name string) string {
		return `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `"},"bogus":1}`
	}
	code, _, out := raw(t, srv, "POST", cms+"?fieldValidation=Strict", "application/json", body("strict"))
	if code != 400 || !strings.Contains(out, `strict decoding error: unknown field \"bogus\"`) {
		t.Fatalf("Strict: %d %s", code, out)
	}
	code, warnings, _ := raw(t, srv, "POST", cms+"?fieldValidation=Warn", "application/json", body("warn"))
	if code != 201 || len(warnings) != 1 || !strings.Contains(warnings[0], `unknown field \"bogus\"`) {
		t.Fatalf("Warn: %d %v", code, warnings)
	}
	code, warnings, _ = raw(t, srv, "POST", cms+"?fieldValidation=Ignore", "application/json", body("ignore"))
	if code != 201 || len(warnings) != 0 {
		t.Fatalf("Ignore: %d %v", code, warnings)
	}
	code, _, out = raw(t, srv, "POST", cms+"?fieldValidation=Sometimes", "application/json", body("x"))
	if code != 400 || !strings.Contains(out, "fieldValidation") {
		t.Fatalf("a bad directive: %d %s", code, out)
	}
}

func TestYAMLBodiesAndBadBodies(t *testing.T) {
	srv := testserver.Start(t)
	const cms = "/api/v1/namespaces/default/configmaps"
	code, _, out := raw(t, srv, "POST", cms, "application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n")
	if code != 201 || !strings.Contains(out, `"from-yaml"`) {
		t.Fatalf("YAML create: %d %s", code, out)
	}
	for _, c := range []struct{ what, ct, body, want string }{
		{"malformed JSON", "application/json", `{"apiVersion":"v1",`, "cannot be handled"},
		{"unknown media type", "text/csv", "a,b", "unknown format"},
		{"a Secret at the ConfigMap URL", "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}`, "cannot be handled as a ConfigMap"},
		{"a body over 3 MiB", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"` + strings.Repeat("x", 4<<20) + `"}}`, "limit is 3145728"},
		{"an invalid name", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}`, "metadata.name: Invalid value"},
	} {
		code, _, out := raw(t, srv, "POST", cms, c.ct, c.body)
		if code < 400 || !strings.Contains(out, c.want) {
			t.Errorf("%s: %d %s; want an error containing %q", c.what, code, out, c.want)
		}
		var st metav1.Status
		if json.Unmarshal([]byte(out), &st) != nil || st.Kind != "Status" {
			t.Errorf("%s: the error is not a Status: %s", c.what, out)
		}
	}
	// Nothing of the refused requests was written.
	c := testserver.Client(t, srv)
	list, err := c.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{FieldSelector: notRootCA})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("after the refused requests: %v, %d objects, want only from-yaml", err, len(list.Items))
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	obj, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm("x", map[string]string{"a": "1"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.Labels["a"] = "2"
	if _, err := c.CoreV1().ConfigMaps("default").Update(ctx, obj, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	code, _, _ := raw(t, srv, "PATCH", "/api/v1/namespaces/default/configmaps/x?dryRun=All", "application/merge-patch+json", `{"metadata":{"labels":{"a":"3"}}}`)
	if code != 200 {
		t.Fatalf("dry-run patch: %d", code)
	}
	if err := c.CoreV1().ConfigMaps("default").Delete(ctx, "x", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.CoreV1().ConfigMaps("default").Get(ctx, "x", metav1.GetOptions{})
	if err != nil || got.Labels["a"] != "1" || got.ResourceVersion != obj.ResourceVersion {
		t.Fatalf("dry runs changed the object: %v %+v", err, got)
	}
}

func TestDeleteCollection(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		l := map[string]string{"group": "one"}
		if n == "c" {
			l["group"] = "two"
		}
		if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm(n, l), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CoreV1().ConfigMaps("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "group=one"}); err != nil {
		t.Fatal(err)
	}
	list, _ := c.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{FieldSelector: notRootCA})
	if len(list.Items) != 1 || list.Items[0].Name != "c" {
		t.Fatalf("after deletecollection group=one: %+v", list.Items)
	}
}
