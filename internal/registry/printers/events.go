package printers

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// eventPrinter serves both core/v1 and events.k8s.io/v1 events: the apiserver
// keeps one internal Event type for the two groups and prints it one way.
func eventPrinter() Printer {
	doc := corev1.Event{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			col("Last Seen", "string", doc["lastTimestamp"]),
			col("Type", "string", doc["type"]),
			col("Reason", "string", doc["reason"]),
			col("Object", "string", doc["involvedObject"]),
			wideCol("Subobject", "string", corev1.ObjectReference{}.SwaggerDoc()["fieldPath"]),
			wideCol("Source", "string", doc["source"]),
			col("Message", "string", doc["message"]),
			wideCol("First Seen", "string", doc["firstTimestamp"]),
			wideCol("Count", "string", doc["count"]),
			{Name: "Name", Type: "string", Format: "name", Priority: 1, Description: objectMetaDoc["name"]},
		},
		Row: eventRow,
	}
}

func eventRow(obj runtime.Object, now time.Time) ([]interface{}, error) {
	var ev *corev1.Event
	switch e := obj.(type) {
	case *corev1.Event:
		ev = e
	case *eventsv1.Event:
		ev = coreEvent(e)
	}
	if ev == nil {
		return nil, fmt.Errorf("printers: expected *v1.Event, got %T", obj)
	}

	first := since(ev.FirstTimestamp, now)
	if ev.FirstTimestamp.IsZero() {
		first = sinceMicro(ev.EventTime, now)
	}
	last := since(ev.LastTimestamp, now)
	if ev.LastTimestamp.IsZero() {
		last = first
	}
	count := ev.Count
	if ev.Series != nil {
		last = sinceMicro(ev.Series.LastObservedTime, now)
		count = ev.Series.Count
	} else if count == 0 {
		// Events of the newer API carry no count when seen once.
		count = 1
	}

	kind := strings.ToLower(ev.InvolvedObject.Kind)
	object := kind
	if ev.InvolvedObject.Name != "" {
		object = kind + "/" + ev.InvolvedObject.Name
	}

	component, instance := ev.Source.Component, ev.Source.Host
	if component == "" {
		component = ev.ReportingController
	}
	if instance == "" {
		instance = ev.ReportingInstance
	}
	source := component
	if instance != "" {
		source = component + ", " + instance
	}

	return []interface{}{
		last, ev.Type, ev.Reason, object, ev.InvolvedObject.FieldPath, source,
		strings.TrimSpace(ev.Message), first, int64(count), ev.Name,
	}, nil
}

// coreEvent maps an events.k8s.io/v1 Event onto the core/v1 shape, the way
// the apiserver converts both to its internal type.
func coreEvent(e *eventsv1.Event) *corev1.Event {
	ev := &corev1.Event{
		ObjectMeta:          e.ObjectMeta,
		InvolvedObject:      e.Regarding,
		Reason:              e.Reason,
		Message:             e.Note,
		Source:              e.DeprecatedSource,
		FirstTimestamp:      e.DeprecatedFirstTimestamp,
		LastTimestamp:       e.DeprecatedLastTimestamp,
		Count:               e.DeprecatedCount,
		Type:                e.Type,
		EventTime:           e.EventTime,
		Action:              e.Action,
		Related:             e.Related,
		ReportingController: e.ReportingController,
		ReportingInstance:   e.ReportingInstance,
	}
	if e.Series != nil {
		ev.Series = &corev1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	return ev
}
