package validation

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Resource names and quantities (container resources, PV capacity, ...).

var (
	standardResources = sets.New[corev1.ResourceName](
		corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage,
		corev1.ResourceRequestsCPU, corev1.ResourceRequestsMemory, corev1.ResourceRequestsEphemeralStorage,
		corev1.ResourceLimitsCPU, corev1.ResourceLimitsMemory, corev1.ResourceLimitsEphemeralStorage,
		corev1.ResourcePods, corev1.ResourceQuotas, corev1.ResourceServices, corev1.ResourceReplicationControllers,
		corev1.ResourceSecrets, corev1.ResourcePersistentVolumeClaims, corev1.ResourceConfigMaps,
		corev1.ResourceStorage, corev1.ResourceRequestsStorage,
		corev1.ResourceServicesNodePorts, corev1.ResourceServicesLoadBalancers,
	)
	standardContainerResources = sets.New[corev1.ResourceName](corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage)
	integerResources           = sets.New[corev1.ResourceName](
		corev1.ResourcePods, corev1.ResourceQuotas, corev1.ResourceServices, corev1.ResourceReplicationControllers,
		corev1.ResourceSecrets, corev1.ResourceConfigMaps, corev1.ResourcePersistentVolumeClaims,
		corev1.ResourceServicesNodePorts, corev1.ResourceServicesLoadBalancers,
	)
)

func sortedKeys(l corev1.ResourceList) []corev1.ResourceName {
	keys := make([]corev1.ResourceName, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func isHugePageResourceName(n corev1.ResourceName) bool {
	return strings.HasPrefix(string(n), corev1.ResourceHugePagesPrefix)
}

func isNativeResource(n corev1.ResourceName) bool {
	return !strings.Contains(string(n), "/") || strings.Contains(string(n), corev1.ResourceDefaultNamespacePrefix)
}

func isExtendedResourceName(n corev1.ResourceName) bool {
	if isNativeResource(n) || strings.HasPrefix(string(n), corev1.DefaultResourceRequestsPrefix) {
		return false
	}
	return len(validation.IsQualifiedName(corev1.DefaultResourceRequestsPrefix+string(n))) == 0
}

func isStandardResourceName(n corev1.ResourceName) bool {
	return standardResources.Has(n) || isHugePageResourceName(n) ||
		strings.HasPrefix(string(n), corev1.DefaultResourceRequestsPrefix+corev1.ResourceHugePagesPrefix)
}

func isOvercommitAllowed(n corev1.ResourceName) bool {
	return isNativeResource(n) && !isHugePageResourceName(n)
}

func isIntegerResourceName(n corev1.ResourceName) bool {
	return integerResources.Has(n) || isExtendedResourceName(n)
}

func validateResourceName(n corev1.ResourceName, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(string(n)) {
		errs = append(errs, field.Invalid(fldPath, n, msg))
	}
	if len(errs) != 0 {
		return errs
	}
	if !strings.Contains(string(n), "/") && !isStandardResourceName(n) {
		errs = append(errs, field.Invalid(fldPath, n, "must be a standard resource type or fully qualified"))
	}
	return errs
}

func validateContainerResourceName(n corev1.ResourceName, fldPath *field.Path) field.ErrorList {
	errs := validateResourceName(n, fldPath)
	if !strings.Contains(string(n), "/") {
		if !standardContainerResources.Has(n) && !isHugePageResourceName(n) {
			return append(errs, field.Invalid(fldPath, n, "must be a standard resource for containers"))
		}
	} else if !isNativeResource(n) && !isExtendedResourceName(n) {
		return append(errs, field.Invalid(fldPath, n, "doesn't follow extended resource name standard"))
	}
	return errs
}

// validateResourceQuantityValue requires a non-negative quantity, and a whole
// number for integer resources.
func validateResourceQuantityValue(n corev1.ResourceName, q resource.Quantity, fldPath *field.Path) field.ErrorList {
	errs := validateNonnegativeQuantity(q, fldPath)
	if isIntegerResourceName(n) && q.MilliValue()%1000 != 0 {
		errs = append(errs, field.Invalid(fldPath, q, "must be an integer"))
	}
	return errs
}

func hugePageSize(n corev1.ResourceName) (resource.Quantity, error) {
	return resource.ParseQuantity(strings.TrimPrefix(string(n), corev1.ResourceHugePagesPrefix))
}

func validateResourceRequirements(r *corev1.ResourceRequirements, podClaims sets.Set[string], fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	limPath, reqPath := fldPath.Child("limits"), fldPath.Child("requests")
	limCPUMem, reqCPUMem, limHuge, reqHuge := false, false, false, false
	hugeCheck := func(n corev1.ResourceName, q resource.Quantity, p *field.Path) {
		size, err := hugePageSize(n)
		if err != nil || size.Value() <= 0 || q.Value()%size.Value() != 0 {
			errs = append(errs, field.Invalid(p, q.String(), fmt.Sprintf("%s is not positive integer multiple of %s", q.String(), n)))
		}
	}
	for _, n := range sortedKeys(r.Limits) {
		q, p := r.Limits[n], limPath.Key(string(n))
		errs = append(errs, validateContainerResourceName(n, p)...)
		errs = append(errs, validateResourceQuantityValue(n, q, p)...)
		if isHugePageResourceName(n) {
			limHuge = true
			hugeCheck(n, q, p)
		}
		if n == corev1.ResourceCPU || n == corev1.ResourceMemory {
			limCPUMem = true
		}
	}
	for _, n := range sortedKeys(r.Requests) {
		q, p := r.Requests[n], reqPath.Key(string(n))
		errs = append(errs, validateContainerResourceName(n, p)...)
		errs = append(errs, validateResourceQuantityValue(n, q, p)...)
		if lim, ok := r.Limits[n]; ok {
			if q.Cmp(lim) != 0 && !isOvercommitAllowed(n) {
				errs = append(errs, field.Invalid(reqPath, q.String(), fmt.Sprintf("must be equal to %s limit of %s", n, lim.String())))
			} else if q.Cmp(lim) > 0 {
				errs = append(errs, field.Invalid(reqPath, q.String(), fmt.Sprintf("must be less than or equal to %s limit of %s", n, lim.String())))
			}
		} else if !isOvercommitAllowed(n) {
			errs = append(errs, field.Required(limPath, "Limit must be set for non overcommitable resources"))
		}
		if isHugePageResourceName(n) {
			reqHuge = true
			hugeCheck(n, q, p)
		}
		if n == corev1.ResourceCPU || n == corev1.ResourceMemory {
			reqCPUMem = true
		}
	}
	if !limCPUMem && !reqCPUMem && (reqHuge || limHuge) {
		errs = append(errs, field.Forbidden(fldPath, "HugePages require cpu or memory"))
	}
	claimsPath := fldPath.Child("claims")
	seen := sets.New[string]()
	for i, c := range r.Claims {
		if c.Name == "" {
			errs = append(errs, field.Required(claimsPath.Index(i), ""))
			continue
		}
		key := c.Name
		if c.Request != "" {
			errs = append(errs, validateDNS1123Label(c.Request, claimsPath.Index(i).Child("request"))...)
			key += "/" + c.Request
		}
		if seen.Has(c.Name) || seen.Has(key) {
			errs = append(errs, field.Duplicate(claimsPath.Index(i), key))
		}
		seen.Insert(key)
		if !podClaims.Has(c.Name) {
			e := field.NotFound(claimsPath.Index(i), c.Name)
			e.Detail = "must be one of the names in pod.spec.resourceClaims"
			if podClaims.Len() == 0 {
				e.Detail += " which is empty"
			} else {
				e.Detail += ": " + strings.Join(sets.List(podClaims), ", ")
			}
			errs = append(errs, e)
		}
	}
	return errs
}
