package openapi

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/kube-openapi/pkg/spec3"
)

// js parses a JSON literal for comparisons.
func js(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	return v
}

// at walks a path of keys through nested maps.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(anyMap)
		v = m[k]
	}
	return v
}

// stripDocs removes descriptions, so shapes can be compared exactly.
func stripDocs(v any) any {
	switch x := v.(type) {
	case anyMap:
		o := anyMap{}
		for k, e := range x {
			if k != "description" {
				o[k] = stripDocs(e)
			}
		}
		return o
	case []any:
		o := make([]any, len(x))
		for i, e := range x {
			o[i] = stripDocs(e)
		}
		return o
	}
	return v
}

func TestKeySchemas(t *testing.T) {
	docs := testDocs(t)
	core := docs["api/v1"]["components"].(anyMap)["schemas"].(anyMap)
	apps := docs["apis/apps/v1"]["components"].(anyMap)["schemas"].(anyMap)
	const meta = "io.k8s.apimachinery.pkg.apis.meta.v1."
	for _, c := range []struct {
		schemas anyMap
		path    []string
		want    string // JSON, descriptions stripped
	}{
		{core, []string{"io.k8s.apimachinery.pkg.api.resource.Quantity"}, `{"oneOf":[{"type":"string"},{"type":"number"}]}`},
		{core, []string{"io.k8s.apimachinery.pkg.util.intstr.IntOrString"}, `{"format":"int-or-string","oneOf":[{"type":"integer"},{"type":"string"}]}`},
		{core, []string{meta + "Time"}, `{"type":"string","format":"date-time"}`},
		{core, []string{meta + "MicroTime"}, `{"type":"string","format":"date-time"}`},
		{core, []string{"io.k8s.apimachinery.pkg.runtime.RawExtension"}, `{"type":"object"}`},
		{core, []string{meta + "FieldsV1"}, `{"type":"object"}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaim", "x-kubernetes-group-version-kind"}, `[{"group":"","kind":"PersistentVolumeClaim","version":"v1"}]`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaim", "properties", "metadata"}, `{"allOf":[{"$ref":"#/components/schemas/` + meta + `ObjectMeta"}],"default":{}}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaim", "properties", "kind"}, `{"type":"string"}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimList", "required"}, `["items"]`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimList", "x-kubernetes-group-version-kind"}, `[{"group":"","kind":"PersistentVolumeClaimList","version":"v1"}]`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimList", "properties", "items"}, `{"type":"array","items":{"allOf":[{"$ref":"#/components/schemas/io.k8s.api.core.v1.PersistentVolumeClaim"}],"default":{}}}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimSpec", "properties", "accessModes"}, `{"type":"array","items":{"default":"","type":"string"}}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimSpec", "properties", "resources"}, `{"allOf":[{"$ref":"#/components/schemas/io.k8s.api.core.v1.VolumeResourceRequirements"}],"default":{}}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimSpec", "properties", "selector"}, `{"allOf":[{"$ref":"#/components/schemas/` + meta + `LabelSelector"}]}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimSpec", "properties", "storageClassName"}, `{"type":"string"}`},
		{core, []string{"io.k8s.api.core.v1.VolumeResourceRequirements", "properties", "requests"}, `{"type":"object","additionalProperties":{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"}}`},
		{core, []string{"io.k8s.api.core.v1.PersistentVolumeClaimStatus", "properties", "conditions"}, `{"type":"array","items":{"allOf":[{"$ref":"#/components/schemas/io.k8s.api.core.v1.PersistentVolumeClaimCondition"}],"default":{}},"x-kubernetes-patch-merge-key":"type","x-kubernetes-patch-strategy":"merge"}`},
		{core, []string{meta + "ObjectMeta", "properties", "labels"}, `{"type":"object","additionalProperties":{"default":"","type":"string"}}`},
		{core, []string{meta + "ObjectMeta", "properties", "finalizers"}, `{"type":"array","items":{"default":"","type":"string"},"x-kubernetes-patch-strategy":"merge"}`},
		{core, []string{meta + "ObjectMeta", "properties", "ownerReferences"}, `{"type":"array","items":{"allOf":[{"$ref":"#/components/schemas/` + meta + `OwnerReference"}],"default":{}},"x-kubernetes-patch-merge-key":"uid","x-kubernetes-patch-strategy":"merge"}`},
		{core, []string{meta + "ObjectMeta", "properties", "creationTimestamp"}, `{"allOf":[{"$ref":"#/components/schemas/` + meta + `Time"}]}`},
		{core, []string{meta + "ObjectMeta", "properties", "generation"}, `{"type":"integer","format":"int64"}`},
		{core, []string{meta + "OwnerReference", "required"}, `["apiVersion","kind","name","uid"]`},
		{core, []string{meta + "OwnerReference", "properties", "uid"}, `{"default":"","type":"string"}`},
		{core, []string{"io.k8s.api.core.v1.ConfigMap", "properties", "binaryData"}, `{"type":"object","additionalProperties":{"type":"string","format":"byte"}}`},
		{core, []string{"io.k8s.api.core.v1.ContainerPort", "properties", "containerPort"}, `{"default":0,"type":"integer","format":"int32"}`},
		{core, []string{"io.k8s.api.core.v1.ContainerPort", "required"}, `["containerPort"]`},
		{core, []string{"io.k8s.api.core.v1.Container", "required"}, `["name"]`},
		{core, []string{"io.k8s.api.core.v1.Container", "properties", "ports", "x-kubernetes-patch-merge-key"}, `"containerPort"`},
		{core, []string{"io.k8s.api.core.v1.PodSpec", "properties", "volumes", "x-kubernetes-patch-strategy"}, `"merge,retainKeys"`},
		{core, []string{"io.k8s.api.core.v1.ServicePort", "properties", "targetPort"}, `{"allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]}`},
		{core, []string{"io.k8s.api.core.v1.Volume", "required"}, `["name"]`},
		{core, []string{"io.k8s.api.core.v1.Volume", "properties", "persistentVolumeClaim"}, `{"allOf":[{"$ref":"#/components/schemas/io.k8s.api.core.v1.PersistentVolumeClaimVolumeSource"}]}`},
		{core, []string{"io.k8s.api.core.v1.Event", "required"}, `["metadata","involvedObject"]`},
		{core, []string{meta + "WatchEvent", "required"}, `["type","object"]`},
		{core, []string{meta + "Status", "x-kubernetes-group-version-kind"}, `[{"group":"","kind":"Status","version":"v1"}]`},
		{apps, []string{"io.k8s.api.apps.v1.StatefulSetSpec", "required"}, `["selector","template"]`},
		{apps, []string{"io.k8s.api.autoscaling.v1.Scale", "x-kubernetes-group-version-kind"}, `[{"group":"autoscaling","kind":"Scale","version":"v1"}]`},
		{apps, []string{"io.k8s.api.autoscaling.v1.ScaleStatus", "required"}, `["replicas"]`},
	} {
		got := stripDocs(at(c.schemas, c.path...))
		if want := js(t, c.want); !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			t.Errorf("%s:\n got %s\nwant %s", strings.Join(c.path, "."), g, c.want)
		}
	}

	// Descriptions come from SwaggerDoc, for types and fields.
	for _, c := range []struct {
		path   []string
		prefix string
	}{
		{[]string{"io.k8s.api.core.v1.PersistentVolumeClaim", "description"}, "PersistentVolumeClaim is a user's request for and claim to a persistent volume"},
		{[]string{"io.k8s.api.core.v1.PersistentVolumeClaimSpec", "properties", "accessModes", "description"}, "accessModes contains the desired access modes"},
		{[]string{"io.k8s.api.core.v1.PersistentVolumeClaim", "properties", "apiVersion", "description"}, "APIVersion defines the versioned schema"},
		{[]string{meta + "ObjectMeta", "properties", "name", "description"}, "Name must be unique within a namespace."},
		{[]string{"io.k8s.apimachinery.pkg.api.resource.Quantity", "description"}, "Quantity is a fixed-point representation"},
	} {
		if got, _ := at(core, c.path...).(string); !strings.HasPrefix(got, c.prefix) {
			t.Errorf("%s = %q", strings.Join(c.path, "."), got)
		}
	}
	for _, name := range []string{"io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"} {
		gvks, _ := json.Marshal(at(apps, name, "x-kubernetes-group-version-kind"))
		if !strings.Contains(string(gvks), `{"group":"apps","kind":`) || !strings.Contains(string(gvks), `{"group":"","kind":`) {
			t.Errorf("%s: gvks %s", name, gvks)
		}
	}
}

// TestStrategicMergeFromSchema: client-side apply builds strategic merge
// patches from the v3 schema (kubectl's Patcher with OpenAPIV3Root); they
// must equal the ones computed from the Go struct tags.
func TestStrategicMergeFromSchema(t *testing.T) {
	body := get(t, testHandler(t), "/openapi/v3/apis/apps/v1").Body.Bytes()
	var doc spec3.OpenAPI
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	sts := doc.Components.Schemas["io.k8s.api.apps.v1.StatefulSet"]
	if sts == nil {
		t.Fatal("no StatefulSet schema")
	}
	fromSchema := strategicpatch.PatchMetaFromOpenAPIV3{Schema: sts, SchemaList: doc.Components.Schemas}
	fromStruct, err := strategicpatch.NewPatchMetaFromStruct(&appsv1.StatefulSet{})
	if err != nil {
		t.Fatal(err)
	}
	original := `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"web","finalizers":["a"],"labels":{"x":"1"}},
	 "spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"spec":{
	  "containers":[{"name":"c","image":"i:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],"ports":[{"containerPort":80}]}],
	  "volumes":[{"name":"v","emptyDir":{}}]}},
	  "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"]}}]}}`
	modified := `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"web","finalizers":["b"],"labels":{"y":"2"}},
	 "spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"spec":{
	  "containers":[{"name":"c","image":"i:2","env":[{"name":"B","value":"3"}],"ports":[{"containerPort":81}]},{"name":"d","image":"j"}],
	  "volumes":[{"name":"v","configMap":{"name":"cm"}}]}},
	  "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteMany"]}}]}}`
	current := `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"web","finalizers":["a","z"],"labels":{"x":"1","srv":"s"}},
	 "spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"template":{"spec":{
	  "containers":[{"name":"c","image":"i:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"C","value":"x"}],"ports":[{"containerPort":80}]}],
	  "volumes":[{"name":"v","emptyDir":{}}]}},
	  "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"]}}]}}`
	want, err := strategicpatch.CreateThreeWayMergePatch([]byte(original), []byte(modified), []byte(current), fromStruct, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := strategicpatch.CreateThreeWayMergePatch([]byte(original), []byte(modified), []byte(current), fromSchema, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(js(t, string(got)), js(t, string(want))) {
		t.Errorf("patch from schema:\n%s\npatch from struct:\n%s", got, want)
	}
	if !strings.Contains(string(want), `"$setElementOrder/containers"`) || !strings.Contains(string(want), `"$retainKeys"`) {
		t.Errorf("test patch does not exercise merge keys: %s", want)
	}
}

// TestOptionalFields: every entry of the optionalFields table names a real
// property, which is then not required.
func TestOptionalFields(t *testing.T) {
	all := anyMap{}
	for _, doc := range testDocs(t) {
		for name, s := range doc["components"].(anyMap)["schemas"].(anyMap) {
			all[name] = s
		}
	}
	for key := range optionalFields {
		i := strings.LastIndex(key, ".")
		comp, field := key[:i], key[i+1:]
		s, ok := all[comp].(anyMap)
		if !ok {
			t.Errorf("%s: no component %s in the test documents", key, comp)
			continue
		}
		if at(s, "properties", field) == nil {
			t.Errorf("%s: no property %s", key, field)
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if r == field {
				t.Errorf("%s is required", key)
			}
		}
	}
}
