package registry

import (
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry/validation"
)

// Builtin returns the registry of every resource moorage serves.
func Builtin() *Registry {
	core := func(kind, plural, singular string, namespaced bool) *Resource {
		return withValidation(&Resource{GVK: corev1.SchemeGroupVersion.WithKind(kind), Plural: plural, Singular: singular, Namespaced: namespaced})
	}
	in := func(gv schema.GroupVersion, kind, plural, singular string, namespaced bool) *Resource {
		return withValidation(&Resource{GVK: gv.WithKind(kind), Plural: plural, Singular: singular, Namespaced: namespaced})
	}

	ns := core("Namespace", "namespaces", "namespace", false)
	ns.ShortNames, ns.Status = []string{"ns"}, true
	ns.PrepareForCreate = func(obj runtime.Object) {
		n := obj.(*corev1.Namespace)
		n.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
		n.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
	}
	ns.PrepareForUpdate = func(obj, old runtime.Object) {
		// spec.finalizers change only through /finalize.
		obj.(*corev1.Namespace).Spec.Finalizers = old.(*corev1.Namespace).Spec.Finalizers
	}
	ns.FieldLabels = func(obj runtime.Object) fields.Set {
		return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
	}

	node := core("Node", "nodes", "node", false)
	node.ShortNames, node.Status = []string{"no"}, true
	node.FieldLabels = func(obj runtime.Object) fields.Set {
		return fields.Set{"spec.unschedulable": strconv.FormatBool(obj.(*corev1.Node).Spec.Unschedulable)}
	}

	pod := core("Pod", "pods", "pod", true)
	pod.ShortNames, pod.Categories, pod.Status, pod.ReturnDeletedObject = []string{"po"}, []string{"all"}, true, true
	pod.PrepareForCreate = func(obj runtime.Object) {
		p := obj.(*corev1.Pod)
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: podQOS(p)}
	}
	pod.FieldLabels = podFieldLabels

	pv := core("PersistentVolume", "persistentvolumes", "persistentvolume", false)
	pv.ShortNames, pv.Status = []string{"pv"}, true
	pv.PrepareForCreate = func(obj runtime.Object) {
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		obj.(*corev1.PersistentVolume).Status = corev1.PersistentVolumeStatus{Phase: corev1.VolumePending, LastPhaseTransitionTime: &now}
	}
	pv.ReturnDeletedObject = true
	pv.PrepareForStatusUpdate = func(obj, old runtime.Object) {
		// As upstream: a phase change stamps lastPhaseTransitionTime unless
		// the writer set it; an unchanged phase keeps the old one.
		n, o := obj.(*corev1.PersistentVolume), old.(*corev1.PersistentVolume)
		switch {
		case n.Status.Phase != o.Status.Phase && (n.Status.LastPhaseTransitionTime == nil || n.Status.LastPhaseTransitionTime.Equal(o.Status.LastPhaseTransitionTime)):
			now := metav1.NewTime(time.Now().Truncate(time.Second))
			n.Status.LastPhaseTransitionTime = &now
		case n.Status.Phase == o.Status.Phase && n.Status.LastPhaseTransitionTime == nil:
			n.Status.LastPhaseTransitionTime = o.Status.LastPhaseTransitionTime
		}
	}
	pv.Warnings = persistentVolumeWarnings

	pvc := core("PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true)
	pvc.ShortNames, pvc.Status, pvc.ReturnDeletedObject = []string{"pvc"}, true, true
	pvc.Warnings = persistentVolumeClaimWarnings
	pvc.PrepareForCreate = func(obj runtime.Object) {
		obj.(*corev1.PersistentVolumeClaim).Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}
	}

	cm := core("ConfigMap", "configmaps", "configmap", true)
	cm.ShortNames = []string{"cm"}

	secret := core("Secret", "secrets", "secret", true)
	secret.FieldLabels = func(obj runtime.Object) fields.Set {
		return fields.Set{"type": string(obj.(*corev1.Secret).Type)}
	}
	secret.PrepareForCreate = func(obj runtime.Object) { mergeStringData(obj.(*corev1.Secret)) }
	secret.PrepareForUpdate = func(obj, _ runtime.Object) { mergeStringData(obj.(*corev1.Secret)) }

	svc := core("Service", "services", "service", true)
	svc.ShortNames, svc.Categories, svc.Status, svc.ReturnDeletedObject = []string{"svc"}, []string{"all"}, true, true
	svc.PrepareForCreate = func(obj runtime.Object) { obj.(*corev1.Service).Status = corev1.ServiceStatus{} }

	ep := core("Endpoints", "endpoints", "endpoints", true)
	ep.ShortNames, ep.AllowCreateOnUpdate = []string{"ep"}, true

	event := core("Event", "events", "event", true)
	event.ShortNames = []string{"ev"}
	event.FieldLabels = eventFieldLabels

	sa := core("ServiceAccount", "serviceaccounts", "serviceaccount", true)
	sa.ShortNames = []string{"sa"}

	rc := core("ReplicationController", "replicationcontrollers", "replicationcontroller", true)
	rc.ShortNames, rc.Categories, rc.Status, rc.Generation = []string{"rc"}, []string{"all"}, true, true
	rc.Scale = &ScaleAccess{Selector: MapSelectorOf}
	rc.PrepareForCreate = ClearStatus
	rc.DefaultDeletePolicy = metav1.DeletePropagationOrphan // core/v1's legacy default, as upstream

	sc := in(storagev1.SchemeGroupVersion, "StorageClass", "storageclasses", "storageclass", false)
	sc.ShortNames = []string{"sc"}
	csidriver := in(storagev1.SchemeGroupVersion, "CSIDriver", "csidrivers", "csidriver", false)
	csinode := in(storagev1.SchemeGroupVersion, "CSINode", "csinodes", "csinode", false)
	va := in(storagev1.SchemeGroupVersion, "VolumeAttachment", "volumeattachments", "volumeattachment", false)
	va.Status = true
	va.PrepareForCreate = ClearStatus

	apps := func(kind, plural, singular string, short ...string) *Resource {
		r := in(appsv1.SchemeGroupVersion, kind, plural, singular, true)
		r.ShortNames, r.Categories, r.Status, r.Generation = short, []string{"all"}, true, true
		r.PrepareForCreate = ClearStatus
		return r
	}
	sts := apps("StatefulSet", "statefulsets", "statefulset", "sts")
	sts.Scale = &ScaleAccess{Selector: LabelSelectorOf}
	sts.Warnings = statefulSetWarnings
	ds := apps("DaemonSet", "daemonsets", "daemonset", "ds")
	ds.PrepareForCreate = func(obj runtime.Object) {
		ClearStatus(obj)
		setTemplateGeneration(obj.(*appsv1.DaemonSet), 1)
	}
	ds.PrepareForUpdate = func(obj, old runtime.Object) {
		n, o := obj.(*appsv1.DaemonSet), old.(*appsv1.DaemonSet)
		gen, _ := strconv.ParseInt(o.Annotations[appsv1.DeprecatedTemplateGeneration], 10, 64)
		if !apiequality.Semantic.DeepEqual(n.Spec.Template, o.Spec.Template) {
			gen++
		}
		setTemplateGeneration(n, max(gen, 1))
	}
	rs := apps("ReplicaSet", "replicasets", "replicaset", "rs")
	rs.Scale = &ScaleAccess{Selector: LabelSelectorOf}
	deploy := apps("Deployment", "deployments", "deployment", "deploy")
	deploy.Scale = &ScaleAccess{Selector: LabelSelectorOf}
	deploy.StatusWritesMetadata = true
	cr := in(appsv1.SchemeGroupVersion, "ControllerRevision", "controllerrevisions", "controllerrevision", true)

	lease := in(coordinationv1.SchemeGroupVersion, "Lease", "leases", "lease", true)
	lease.AllowCreateOnUpdate = true

	ev2 := in(eventsv1.SchemeGroupVersion, "Event", "events", "event", true)
	ev2.ShortNames, ev2.StorageResource = []string{"ev"}, event
	ev2.ToStorage, ev2.FromStorage = eventToCore, eventFromCore
	ev2.FieldLabels = func(obj runtime.Object) fields.Set {
		c, _ := eventToCore(obj)
		return eventFieldLabels(c)
	}

	eps := in(discoveryv1.SchemeGroupVersion, "EndpointSlice", "endpointslices", "endpointslice", true)
	eps.AllowCreateOnUpdate, eps.Generation = true, true

	reg, err := New(ns, node, pod, pv, pvc, cm, secret, svc, ep, event, sa, rc,
		sc, csidriver, csinode, va, sts, ds, rs, deploy, cr, lease, ev2, eps, certificateSigningRequests())
	if err != nil {
		panic(err) // the list above is static: a duplicate is a programming error
	}
	return reg
}

// setTemplateGeneration is upstream's spec.templateGeneration, which
// apps/v1 carries as the deprecated.daemonset.template.generation
// annotation: 1 on create, +1 whenever the pod template changes; daemon
// pods are labelled with it.
func setTemplateGeneration(ds *appsv1.DaemonSet, gen int64) {
	if ds.Annotations == nil {
		ds.Annotations = map[string]string{}
	}
	ds.Annotations[appsv1.DeprecatedTemplateGeneration] = strconv.FormatInt(gen, 10)
}

func withValidation(r *Resource) *Resource {
	r.Validate = validation.ValidateCreate
	r.ValidateUpdate = validation.ValidateUpdate
	r.ValidateStatusUpdate = validation.ValidateStatusUpdate
	return r
}

func podFieldLabels(obj runtime.Object) fields.Set {
	p := obj.(*corev1.Pod)
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

func eventFieldLabels(obj runtime.Object) fields.Set {
	e := obj.(*corev1.Event)
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
}

// podQOS is upstream's QoS class: Guaranteed when every container has equal,
// set cpu and memory limits and requests; BestEffort when none has any;
// Burstable otherwise.
func podQOS(p *corev1.Pod) corev1.PodQOSClass {
	all := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	anySet, guaranteed := false, true
	for _, c := range all {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if (hasReq && !req.IsZero()) || (hasLim && !lim.IsZero()) {
				anySet = true
			}
			if !hasLim || lim.IsZero() || (hasReq && req.Cmp(lim) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !anySet:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// mergeStringData moves a Secret's write-only stringData into data, where
// its keys win, as upstream's conversion of v1 Secrets does before
// validation and storage.
func mergeStringData(s *corev1.Secret) {
	if len(s.StringData) == 0 {
		s.StringData = nil
		return
	}
	if s.Data == nil {
		s.Data = make(map[string][]byte, len(s.StringData))
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}
