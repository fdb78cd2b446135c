// Package printers computes the server-side Table columns and cells that
// kubectl get shows, matching the output of kube-apiserver 1.33 for the
// resources moorage serves.
package printers

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Printer prints one resource's objects as Table rows, as upstream
// kube-apiserver does.
type Printer struct {
	// Columns are upstream's column definitions: names, types, formats,
	// descriptions and priorities (priority 1 = only with -o wide).
	Columns []metav1.TableColumnDefinition
	// Row returns the cells for one object (len == len(Columns)). now is the
	// time Age is measured against.
	Row func(obj runtime.Object, now time.Time) ([]interface{}, error)
}

// For returns the printer for a group/resource (e.g. {Group:"",
// Resource:"pods"}), or false.
func For(gr schema.GroupResource) (Printer, bool) {
	build, ok := registry[gr]
	if !ok {
		return Printer{}, false
	}
	return build(), true
}

// Default is the printer for resources that have none. Like the apiserver's
// default table convertor it prints Name and "Created At" (an RFC 3339 UTC
// timestamp of type "date", which kubectl shows as is).
func Default() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			{Name: "Created At", Type: "date", Description: objectMetaDoc["creationTimestamp"]},
		},
		Row: func(obj runtime.Object, _ time.Time) ([]interface{}, error) {
			m, ok := obj.(metav1.Object)
			if v := reflect.ValueOf(obj); !ok || (v.Kind() == reflect.Pointer && v.IsNil()) {
				return nil, fmt.Errorf("printers: %T has no object metadata", obj)
			}
			created := m.GetCreationTimestamp()
			return []interface{}{m.GetName(), created.UTC().Format(time.RFC3339)}, nil
		},
	}
}

// registry maps each served resource to a constructor, so every caller gets
// its own Columns slice.
var registry = map[schema.GroupResource]func() Printer{
	{Group: "", Resource: "namespaces"}:                                    namespacePrinter,
	{Group: "", Resource: "nodes"}:                                         nodePrinter,
	{Group: "", Resource: "pods"}:                                          podPrinter,
	{Group: "", Resource: "persistentvolumes"}:                             persistentVolumePrinter,
	{Group: "", Resource: "persistentvolumeclaims"}:                        persistentVolumeClaimPrinter,
	{Group: "", Resource: "configmaps"}:                                    configMapPrinter,
	{Group: "", Resource: "secrets"}:                                       secretPrinter,
	{Group: "", Resource: "services"}:                                      servicePrinter,
	{Group: "", Resource: "endpoints"}:                                     endpointsPrinter,
	{Group: "", Resource: "events"}:                                        eventPrinter,
	{Group: "", Resource: "serviceaccounts"}:                               serviceAccountPrinter,
	{Group: "", Resource: "replicationcontrollers"}:                        replicationControllerPrinter,
	{Group: "storage.k8s.io", Resource: "storageclasses"}:                  storageClassPrinter,
	{Group: "storage.k8s.io", Resource: "csidrivers"}:                      csiDriverPrinter,
	{Group: "storage.k8s.io", Resource: "csinodes"}:                        csiNodePrinter,
	{Group: "storage.k8s.io", Resource: "volumeattachments"}:               volumeAttachmentPrinter,
	{Group: "apps", Resource: "statefulsets"}:                              statefulSetPrinter,
	{Group: "apps", Resource: "daemonsets"}:                                daemonSetPrinter,
	{Group: "apps", Resource: "controllerrevisions"}:                       controllerRevisionPrinter,
	{Group: "apps", Resource: "replicasets"}:                               replicaSetPrinter,
	{Group: "apps", Resource: "deployments"}:                               deploymentPrinter,
	{Group: "coordination.k8s.io", Resource: "leases"}:                     leasePrinter,
	{Group: "events.k8s.io", Resource: "events"}:                           eventPrinter,
	{Group: "discovery.k8s.io", Resource: "endpointslices"}:                endpointSlicePrinter,
	{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}: certificateSigningRequestPrinter,
}

var objectMetaDoc = metav1.ObjectMeta{}.SwaggerDoc()

// Descriptions upstream writes by hand for the container columns of workloads.
const (
	containersDoc = "Names of each container in the template."
	imagesDoc     = "Images referenced by each container in the template."
)

func nameColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: objectMetaDoc["name"]}
}

func ageColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: objectMetaDoc["creationTimestamp"]}
}

func col(name, typ, desc string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Description: desc}
}

func wideCol(name, typ, desc string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Description: desc, Priority: 1}
}

// rowOf adapts a typed row function to Printer.Row, rejecting other types.
func rowOf[T any](f func(*T, time.Time) ([]interface{}, error)) func(runtime.Object, time.Time) ([]interface{}, error) {
	return func(obj runtime.Object, now time.Time) ([]interface{}, error) {
		o, ok := any(obj).(*T)
		if !ok || o == nil {
			return nil, fmt.Errorf("printers: expected %T, got %T", (*T)(nil), obj)
		}
		return f(o, now)
	}
}

// since renders the time elapsed from t to now the way kubectl shows ages.
func since(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

func sinceMicro(t metav1.MicroTime, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// containerCells returns the comma-joined container names and images.
func containerCells(containers []corev1.Container) (string, string) {
	names := make([]string, len(containers))
	images := make([]string, len(containers))
	for i, c := range containers {
		names[i] = c.Name
		images[i] = c.Image
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}

// listWithMore joins up to limit items and appends " + N more..." for the
// rest; an empty list prints as "<unset>".
func listWithMore(items []string, limit int) string {
	if len(items) > limit {
		return fmt.Sprintf("%s + %d more...", strings.Join(items[:limit], ","), len(items)-limit)
	}
	if len(items) == 0 {
		return "<unset>"
	}
	return strings.Join(items, ",")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func derefInt32(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

func derefBool(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}
