package validation

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func newService() *corev1.Service {
	return defaulted(&corev1.Service{ObjectMeta: om("web", "default"), Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}})
}

func TestService(t *testing.T) {
	type svc = *corev1.Service
	runCases(t, newService, create[svc], []tc[svc]{
		{"name is dns-1035", func(s svc) { s.Name = "1web" }, "metadata.name", tInv, ""},
		{"no ports", func(s svc) { s.Spec.Ports = nil }, "spec.ports", tReq, ""},
		{"port range", func(s svc) { s.Spec.Ports[0].Port = 0 }, "spec.ports[0].port", tInv, ""},
		{"protocol", func(s svc) { s.Spec.Ports[0].Protocol = "ICMP" }, "spec.ports[0].protocol", tNS, ""},
		{"unnamed ports", func(s svc) {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "b", Port: 81, Protocol: "TCP", TargetPort: intstr.FromInt32(81)})
		},
			"spec.ports[0].name", tReq, ""},
		{"duplicate port", func(s svc) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "a", Port: 80, Protocol: "TCP", TargetPort: intstr.FromInt32(80)}, {Name: "b", Port: 80, Protocol: "TCP", TargetPort: intstr.FromInt32(80)}}
		}, "spec.ports[1]", tDup, ""},
		{"type", func(s svc) { s.Spec.Type = "Magic" }, "spec.type", tNS, ""},
		{"nodePort on ClusterIP", func(s svc) { s.Spec.Ports[0].NodePort = 30000 }, "spec.ports[0].nodePort", tForb, ""},
		{"bad clusterIP", func(s svc) { s.Spec.ClusterIP = "300.1.1.1" }, "spec.clusterIPs[0]", tInv, ""},
		{"headless NodePort", func(s svc) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
			s.Spec.ClusterIP = "None"
		}, "spec.clusterIPs[0]", tInv, ""},
		{"externalName", func(s svc) { s.Spec.Type = corev1.ServiceTypeExternalName; s.Spec.InternalTrafficPolicy = nil }, "spec.externalName", tReq, ""},
		{"session affinity", func(s svc) { s.Spec.SessionAffinity = "Sticky" }, "spec.sessionAffinity", tNS, ""},
	})
	headless := newService()
	headless.Spec.ClusterIP = "None"
	headless.Spec.Ports = nil
	expectNone(t, ValidateCreate(headless))

	old := newService()
	old.Spec.ClusterIP = "10.0.0.10"
	old.Spec.ClusterIPs = []string{"10.0.0.10"}
	changed := old.DeepCopy()
	changed.Spec.ClusterIP, changed.Spec.ClusterIPs = "10.0.0.11", []string{"10.0.0.11"}
	expectErr(t, ValidateUpdate(changed, old), "spec.clusterIPs[0]", tInv, "")
	ports := old.DeepCopy()
	ports.Spec.Ports[0].Port = 8080
	expectNone(t, ValidateUpdate(ports, old))
	status := old.DeepCopy()
	status.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}
	expectErr(t, ValidateStatusUpdate(status, old), "status.loadBalancer.ingress", tForb, "")
}

func TestConfigMapAndSecret(t *testing.T) {
	cm := defaulted(&corev1.ConfigMap{ObjectMeta: om("cfg", "default"), Data: map[string]string{"a.conf": "x"}})
	expectNone(t, ValidateCreate(cm))
	bad := cm.DeepCopy()
	bad.Data["bad/key"] = "x"
	expectErr(t, ValidateCreate(bad), "data[bad/key]", tInv, "")
	big := cm.DeepCopy()
	big.Data["big"] = strings.Repeat("x", maxSecretSize+1)
	expectErr(t, ValidateCreate(big), "[]", tLong, "[]: Too long: may not be more than 1048576 bytes")
	dup := cm.DeepCopy()
	dup.BinaryData = map[string][]byte{"a.conf": nil}
	expectErr(t, ValidateCreate(dup), "data[a.conf]", tInv, "")

	imm := cm.DeepCopy()
	imm.Immutable = ptr(true)
	edit := imm.DeepCopy()
	edit.Data["a.conf"] = "y"
	expectErr(t, ValidateUpdate(edit, imm), "data", tForb, "data: Forbidden: field is immutable when `immutable` is set")

	s := defaulted(&corev1.Secret{ObjectMeta: om("tls", "default"), Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}})
	expectNone(t, ValidateCreate(s))
	noKey := s.DeepCopy()
	delete(noKey.Data, "tls.key")
	expectErr(t, ValidateCreate(noKey), "data[tls.key]", tReq, "data[tls.key]: Required value")
	retyped := s.DeepCopy()
	retyped.Type = corev1.SecretTypeOpaque
	expectErr(t, ValidateUpdate(retyped, s), "type", tInv, "")
	docker := defaulted(&corev1.Secret{ObjectMeta: om("d", "default"), Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{".dockerconfigjson": []byte("{")}})
	expectErr(t, ValidateCreate(docker), "data[.dockerconfigjson]", tInv, "")
	sa := defaulted(&corev1.Secret{ObjectMeta: om("t", "default"), Type: corev1.SecretTypeServiceAccountToken})
	expectErr(t, ValidateCreate(sa), "metadata.annotations[kubernetes.io/service-account.name]", tReq, "")
}

func TestNamespaceNodeAndMisc(t *testing.T) {
	ns := defaulted(&corev1.Namespace{ObjectMeta: om("team-a", ""), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}})
	expectNone(t, ValidateCreate(ns))
	dotted := ns.DeepCopy()
	dotted.Name = "team.a"
	expectErr(t, ValidateCreate(dotted), "metadata.name", tInv, "")
	fin := ns.DeepCopy()
	fin.Spec.Finalizers = []corev1.FinalizerName{"custom"}
	expectErr(t, ValidateCreate(fin), "spec.finalizers", tInv, "")
	term := ns.DeepCopy()
	term.Status.Phase = corev1.NamespaceTerminating
	expectErr(t, ValidateStatusUpdate(term, ns), "status.Phase", tInv, "")

	node := defaulted(&corev1.Node{ObjectMeta: om("node-1", ""), Spec: corev1.NodeSpec{ProviderID: "moorage://1"}})
	expectNone(t, ValidateCreate(node))
	taint := node.DeepCopy()
	taint.Spec.Taints = []corev1.Taint{{Key: "k", Effect: "Sometimes"}}
	expectErr(t, ValidateCreate(taint), "metadata.taints[0].effect", tNS, "")
	provider := node.DeepCopy()
	provider.Spec.ProviderID = "moorage://2"
	expectErr(t, ValidateUpdate(provider, node), "spec.providerID", tForb, "")

	sa := &corev1.ServiceAccount{ObjectMeta: om("Bad_SA", "default")}
	expectErr(t, ValidateCreate(sa), "metadata.name", tInv, "")

	ep := defaulted(&corev1.Endpoints{ObjectMeta: om("web", "default"), Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: "10.1.0.5"}}, Ports: []corev1.EndpointPort{{Port: 80}}}}})
	expectNone(t, ValidateCreate(ep))
	loop := ep.DeepCopy()
	loop.Subsets[0].Addresses[0].IP = "127.0.0.1"
	expectErr(t, ValidateCreate(loop), "subsets[0].addresses[0].ip", tInv, "")

	ev := &corev1.Event{ObjectMeta: om("web.1", "default"), InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "other"}}
	expectErr(t, ValidateCreate(ev), "involvedObject.namespace", tInv,
		`involvedObject.namespace: Invalid value: "other": does not match event.namespace`)
	ev.InvolvedObject.Namespace = "default"
	expectNone(t, ValidateCreate(ev))
	ev.Name = "a/b"
	expectErr(t, ValidateCreate(ev), "metadata.name", tInv, "") // path-segment name rule

	lease := &coordinationv1.Lease{ObjectMeta: om("node-1", "kube-node-lease"), Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr(int32(0))}}
	expectErr(t, ValidateCreate(lease), "spec.leaseDurationSeconds", tInv, "")
	lease.Spec.LeaseDurationSeconds = ptr(int32(40))
	expectNone(t, ValidateCreate(lease))

	now := metav1.NewMicroTime(time.Now())
	ev1 := &eventsv1.Event{ObjectMeta: om("e1", "default"), EventTime: now, ReportingController: "moorage.io/ctl", ReportingInstance: "i",
		Action: "Bind", Reason: "Bound", Type: "Normal", Regarding: corev1.ObjectReference{Namespace: "default"}}
	expectNone(t, ValidateCreate(ev1))
	badType := ev1.DeepCopy()
	badType.Type = "Info"
	expectErr(t, ValidateCreate(badType), "type", tInv, "")
	changedNote := ev1.DeepCopy()
	changedNote.Note = "edited"
	expectErr(t, ValidateUpdate(changedNote, ev1), "message", tInv, "")

	es := defaulted(&discoveryv1.EndpointSlice{ObjectMeta: om("web-abc", "default"), AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}}}, Ports: []discoveryv1.EndpointPort{{Port: ptr(int32(80))}}})
	expectNone(t, ValidateCreate(es))
	v6 := es.DeepCopy()
	v6.Endpoints[0].Addresses = []string{"fd00::1"}
	expectErr(t, ValidateCreate(v6), "endpoints[0].addresses[0]", tInv, "")
	retype := es.DeepCopy()
	retype.AddressType = discoveryv1.AddressTypeIPv6
	retype.Endpoints[0].Addresses = []string{"fd00::5"}
	expectErr(t, ValidateUpdate(retype, es), "addressType", tInv, "")

	if errs := ValidateCreate(&corev1.PodTemplate{}); errs != nil {
		t.Errorf("unknown type: want nil, got %v", errs)
	}
	if errs := ValidateUpdate(newPod(), newPVC()); errs != nil {
		t.Errorf("mismatched types: want nil, got %v", errs)
	}
	if errs := ValidateStatusUpdate(cmOf("x"), cmOf("x")); errs != nil {
		t.Errorf("no status subresource: want nil, got %v", errs)
	}
}

func cmOf(name string) *corev1.ConfigMap { return &corev1.ConfigMap{ObjectMeta: om(name, "default")} }

// TestZeroObjectsDoNotPanic feeds empty, undefaulted objects of every kind
// through all three entry points.
func TestZeroObjectsDoNotPanic(t *testing.T) {
	for _, mk := range []func() runtime.Object{
		func() runtime.Object { return &corev1.Namespace{} }, func() runtime.Object { return &corev1.Node{} },
		func() runtime.Object { return &corev1.Pod{} }, func() runtime.Object { return &corev1.PersistentVolume{} },
		func() runtime.Object { return &corev1.PersistentVolumeClaim{} }, func() runtime.Object { return &corev1.ConfigMap{} },
		func() runtime.Object { return &corev1.Secret{} }, func() runtime.Object { return &corev1.Service{} },
		func() runtime.Object { return &corev1.Endpoints{} }, func() runtime.Object { return &corev1.Event{} },
		func() runtime.Object { return &corev1.ServiceAccount{} }, func() runtime.Object { return &corev1.ReplicationController{} },
		func() runtime.Object { return &storagev1.StorageClass{} }, func() runtime.Object { return &storagev1.CSIDriver{} },
		func() runtime.Object { return &storagev1.CSINode{} }, func() runtime.Object { return &storagev1.VolumeAttachment{} },
		func() runtime.Object { return &appsv1.StatefulSet{} }, func() runtime.Object { return &appsv1.DaemonSet{} },
		func() runtime.Object { return &appsv1.ReplicaSet{} }, func() runtime.Object { return &appsv1.Deployment{} },
		func() runtime.Object { return &appsv1.ControllerRevision{} }, func() runtime.Object { return &coordinationv1.Lease{} },
		func() runtime.Object { return &eventsv1.Event{} }, func() runtime.Object { return &discoveryv1.EndpointSlice{} },
	} {
		obj := mk()
		if len(ValidateCreate(obj)) == 0 {
			t.Errorf("%T: empty object accepted", obj)
		}
		ValidateUpdate(mk(), mk())
		ValidateStatusUpdate(mk(), mk())
		d := defaulted(mk())
		ValidateUpdate(d, d.DeepCopyObject())
	}
}
