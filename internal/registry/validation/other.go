package validation

import (
	"net"
	"reflect"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// coordination.k8s.io/v1 Lease, events.k8s.io/v1 Event, discovery.k8s.io/v1 EndpointSlice.

func validateLease(l *coordinationv1.Lease) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&l.ObjectMeta, true, nameIsSubdomain, metaPath)
	return append(errs, validateLeaseSpec(&l.Spec, field.NewPath("spec"))...)
}

func validateLeaseSpec(spec *coordinationv1.LeaseSpec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if d := spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(fldPath.Child("leaseDurationSeconds"), d, "must be greater than 0"))
	}
	if t := spec.LeaseTransitions; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(fldPath.Child("leaseTransitions"), t, "must be greater than or equal to 0"))
	}
	if s := spec.Strategy; s != nil {
		sp := fldPath.Child("strategy").Child("strategy")
		if !strings.Contains(string(*s), "/") {
			if *s != coordinationv1.OldestEmulationVersion {
				errs = append(errs, field.NotSupported(sp, *s, []coordinationv1.CoordinatedLeaseStrategy{coordinationv1.OldestEmulationVersion}))
			}
		} else {
			for _, msg := range validation.IsQualifiedName(string(*s)) {
				errs = append(errs, field.Invalid(sp, *s, msg))
			}
		}
	}
	if h := spec.PreferredHolder; h != nil && *h != "" && (spec.Strategy == nil || *spec.Strategy == "") {
		errs = append(errs, field.Forbidden(fldPath.Child("preferredHolder"), "may only be specified if `strategy` is defined"))
	}
	return errs
}

// validateEventsV1Event applies the strict rules of events.k8s.io/v1 (on
// top of the legacy ones); old is nil on create.
func validateEventsV1Event(e *eventsv1.Event, old *eventsv1.Event) field.ErrorList {
	errs := validateCoreEvent(&corev1.Event{
		ObjectMeta:          e.ObjectMeta,
		InvolvedObject:      e.Regarding,
		Reason:              e.Reason,
		Message:             e.Note,
		EventTime:           e.EventTime,
		Action:              e.Action,
		ReportingController: e.ReportingController,
		ReportingInstance:   e.ReportingInstance,
	})
	series := func() {
		if e.Series != nil {
			if e.Series.Count < 2 {
				errs = append(errs, field.Invalid(field.NewPath("series.count"), "", "should be at least 2"))
			}
			if e.Series.LastObservedTime.IsZero() {
				errs = append(errs, field.Required(field.NewPath("series.lastObservedTime"), ""))
			}
		}
	}
	if old == nil {
		errs = append(errs, validateObjectMeta(&e.ObjectMeta, true, nameIsSubdomain, metaPath)...)
		series()
		if e.EventTime.IsZero() {
			errs = append(errs, field.Required(field.NewPath("eventTime"), ""))
		}
		if e.Type != corev1.EventTypeNormal && e.Type != corev1.EventTypeWarning {
			errs = append(errs, field.Invalid(field.NewPath("type"), "", "has invalid value: "+e.Type))
		}
		if !e.DeprecatedFirstTimestamp.IsZero() {
			errs = append(errs, field.Invalid(field.NewPath("firstTimestamp"), "", "needs to be unset"))
		}
		if !e.DeprecatedLastTimestamp.IsZero() {
			errs = append(errs, field.Invalid(field.NewPath("lastTimestamp"), "", "needs to be unset"))
		}
		if e.DeprecatedCount != 0 {
			errs = append(errs, field.Invalid(field.NewPath("count"), "", "needs to be unset"))
		}
		if e.DeprecatedSource.Component != "" || e.DeprecatedSource.Host != "" {
			errs = append(errs, field.Invalid(field.NewPath("source"), "", "needs to be unset"))
		}
		return errs
	}
	errs = append(errs, validateObjectMetaUpdate(&e.ObjectMeta, &old.ObjectMeta, metaPath)...)
	if !reflect.DeepEqual(e.Series, old.Series) {
		series()
	}
	imm := func(n, o interface{}, name string) {
		errs = append(errs, apimachineryvalidation.ValidateImmutableField(n, o, field.NewPath(name))...)
	}
	imm(e.Regarding, old.Regarding, "involvedObject")
	imm(e.Reason, old.Reason, "reason")
	imm(e.Note, old.Note, "message")
	imm(e.DeprecatedSource, old.DeprecatedSource, "source")
	imm(e.DeprecatedFirstTimestamp, old.DeprecatedFirstTimestamp, "firstTimestamp")
	imm(e.DeprecatedLastTimestamp, old.DeprecatedLastTimestamp, "lastTimestamp")
	imm(e.DeprecatedCount, old.DeprecatedCount, "count")
	imm(e.Reason, old.Reason, "reason")
	imm(e.Type, old.Type, "type")
	imm(e.EventTime, old.EventTime, "eventTime")
	imm(e.Action, old.Action, "action")
	imm(e.Related, old.Related, "related")
	imm(e.ReportingController, old.ReportingController, "reportingController")
	imm(e.ReportingInstance, old.ReportingInstance, "reportingInstance")
	return errs
}

var addressTypes = []string{string(discoveryv1.AddressTypeFQDN), string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6)}

func validateEndpointSlice(es *discoveryv1.EndpointSlice, allowDeprecatedIP bool) field.ErrorList {
	errs := validateObjectMeta(&es.ObjectMeta, true, nameIsSubdomain, metaPath)
	valid := addressTypes
	if allowDeprecatedIP {
		valid = []string{string(discoveryv1.AddressTypeFQDN), "IP", string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6)}
	}
	atPath := field.NewPath("addressType")
	if es.AddressType == "" {
		errs = append(errs, field.Required(atPath, ""))
	} else if !containsStr(valid, string(es.AddressType)) {
		errs = append(errs, field.NotSupported(atPath, es.AddressType, valid))
	}
	ep := field.NewPath("endpoints")
	if len(es.Endpoints) > 1000 {
		errs = append(errs, field.TooMany(ep, len(es.Endpoints), 1000))
	} else {
		for i, e := range es.Endpoints {
			p := ep.Index(i)
			ap := p.Child("addresses")
			if len(e.Addresses) == 0 {
				errs = append(errs, field.Required(ap, "must contain at least 1 address"))
			} else if len(e.Addresses) > 100 {
				errs = append(errs, field.TooMany(ap, len(e.Addresses), 100))
			}
			for j, a := range e.Addresses {
				errs = append(errs, validateSliceAddress(es.AddressType, a, ap.Index(j))...)
			}
			if e.DeprecatedTopology != nil && len(e.DeprecatedTopology) > 16 {
				errs = append(errs, field.TooMany(p.Child("deprecatedTopology"), len(e.DeprecatedTopology), 16))
			}
			errs = append(errs, metav1validation.ValidateLabels(e.DeprecatedTopology, p.Child("deprecatedTopology"))...)
			if e.Hostname != nil {
				errs = append(errs, validateDNS1123Label(*e.Hostname, p.Child("hostname"))...)
			}
		}
	}
	pp := field.NewPath("ports")
	if len(es.Ports) > 100 {
		return append(errs, field.TooMany(pp, len(es.Ports), 100))
	}
	names := sets.New[string]()
	for i, p := range es.Ports {
		ip := pp.Index(i)
		name := deref(p.Name)
		if name != "" {
			errs = append(errs, validateDNS1123Label(name, ip.Child("name"))...)
		}
		if names.Has(name) {
			errs = append(errs, field.Duplicate(ip.Child("name"), p.Name))
		}
		names.Insert(name)
		if p.Protocol == nil {
			errs = append(errs, field.Required(ip.Child("protocol"), ""))
		} else if !containsStr(portProtocols, *p.Protocol) {
			errs = append(errs, field.NotSupported(ip.Child("protocol"), *p.Protocol, sortedStrings(portProtocols)))
		}
		if p.AppProtocol != nil {
			for _, msg := range validation.IsQualifiedName(*p.AppProtocol) {
				errs = append(errs, field.Invalid(ip.Child("appProtocol"), p.AppProtocol, msg))
			}
		}
	}
	return errs
}

func validateSliceAddress(t discoveryv1.AddressType, a string, fldPath *field.Path) field.ErrorList {
	switch t {
	case "IP":
		return validation.IsValidIP(fldPath, a)
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		errs := validation.IsValidIP(fldPath, a)
		if len(errs) == 0 {
			if v4 := net.ParseIP(a).To4() != nil; v4 != (t == discoveryv1.AddressTypeIPv4) {
				errs = append(errs, field.Invalid(fldPath, a, "must be a valid "+string(t)+" address"))
			}
		}
		return append(errs, validateNonSpecialIP(a, fldPath)...)
	case discoveryv1.AddressTypeFQDN:
		return validation.IsFullyQualifiedDomainName(fldPath, a)
	}
	return nil
}

func validateEndpointSliceUpdate(es, old *discoveryv1.EndpointSlice) field.ErrorList {
	errs := validateEndpointSlice(es, true)
	return append(errs, apimachineryvalidation.ValidateImmutableField(es.AddressType, old.AddressType, field.NewPath("addressType"))...)
}
