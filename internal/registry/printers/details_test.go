package printers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// cellCase checks selected cells (by column name) of one printed object.
type cellCase struct {
	name string
	obj  runtime.Object
	want map[string]interface{}
}

func checkCells(t *testing.T, r schema.GroupResource, tests []cellCase) {
	t.Helper()
	p, _ := For(r)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cells(t, r, tt.obj)
			for col, want := range tt.want {
				i := columnIndex(t, p, col)
				if c[i] != want {
					t.Errorf("%s = %#v, want %#v", col, c[i], want)
				}
			}
		})
	}
}

func columnIndex(t *testing.T, p Printer, name string) int {
	t.Helper()
	for i, c := range p.Columns {
		if c.Name == name {
			return i
		}
	}
	t.Fatalf("no column %q", name)
	return -1
}

func svc(typ corev1.ServiceType, mut func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: om("s"), Spec: corev1.ServiceSpec{Type: typ, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"}}}
	if mut != nil {
		mut(s)
	}
	return s
}

func lbIngress(addrs ...corev1.LoadBalancerIngress) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Status.LoadBalancer.Ingress = addrs }
}

func TestServices(t *testing.T) {
	checkCells(t, core("services"), []cellCase{
		{"cluster ip, no ports", svc(corev1.ServiceTypeClusterIP, nil),
			map[string]interface{}{"External-IP": "<none>", "Port(s)": "<none>", "Selector": "<none>"}},
		{"cluster ip with external ips", svc(corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"1.2.3.4", "5.6.7.8"}
		}), map[string]interface{}{"External-IP": "1.2.3.4,5.6.7.8"}},
		{"unset type is ClusterIP, unset protocol TCP", svc("", func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 53}}
		}), map[string]interface{}{"Type": "ClusterIP", "External-IP": "<none>", "Port(s)": "53/UDP,53/TCP"}},
		{"headless", svc(corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"}
		}), map[string]interface{}{"Cluster-IP": "None"}},
		{"dual stack shows first cluster ip", svc(corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.1", "fd00::1"}
		}), map[string]interface{}{"Cluster-IP": "10.96.0.1"}},
		{"cluster ips derived from cluster ip", svc(corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
			s.Spec.ClusterIPs = nil
		}), map[string]interface{}{"Cluster-IP": "10.96.0.1"}},
		{"load balancer pending", svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Port: 80, NodePort: 31000, Protocol: corev1.ProtocolTCP}}
		}), map[string]interface{}{"External-IP": "<pending>", "Port(s)": "80:31000/TCP"}},
		{"load balancer ingress sorted, deduplicated, not shortened", svc(corev1.ServiceTypeLoadBalancer, lbIngress(
			corev1.LoadBalancerIngress{Hostname: "a-very-long-name.elb.example.com"},
			corev1.LoadBalancerIngress{IP: "203.0.113.9", Hostname: "ignored.example.com"},
			corev1.LoadBalancerIngress{IP: "203.0.113.9"})),
			map[string]interface{}{"External-IP": "203.0.113.9,a-very-long-name.elb.example.com"}},
		{"load balancer ingress then external ips", svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
			lbIngress(corev1.LoadBalancerIngress{IP: "203.0.113.9"})(s)
			s.Spec.ExternalIPs = []string{"1.2.3.4"}
		}), map[string]interface{}{"External-IP": "203.0.113.9,1.2.3.4"}},
		{"load balancer external ips only", svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"1.2.3.4"}
		}), map[string]interface{}{"External-IP": "1.2.3.4"}},
		{"external name", svc(corev1.ServiceTypeExternalName, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.ExternalName = "", nil, "db.example.com"
		}), map[string]interface{}{"Cluster-IP": "<none>", "External-IP": "db.example.com", "Port(s)": "<none>"}},
		{"unknown type", svc("Bogus", nil), map[string]interface{}{"External-IP": "<unknown>"}},
	})
}

func node(labels map[string]string, unschedulable bool, ready ...corev1.ConditionStatus) *corev1.Node {
	n := &corev1.Node{ObjectMeta: om("n"), Spec: corev1.NodeSpec{Unschedulable: unschedulable}}
	n.Labels = labels
	for _, s := range ready {
		n.Status.Conditions = append(n.Status.Conditions,
			corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
			corev1.NodeCondition{Type: corev1.NodeReady, Status: s})
	}
	return n
}

func TestNodes(t *testing.T) {
	checkCells(t, core("nodes"), []cellCase{
		{"no roles, no ready condition", node(nil, false), map[string]interface{}{
			"Roles": "<none>", "Status": "Unknown", "Internal-IP": "<none>", "External-IP": "<none>",
			"OS-Image": "<unknown>", "Kernel-Version": "<unknown>", "Container-Runtime": "<unknown>", "Version": ""}},
		{"roles from both label styles, sorted and deduplicated", node(map[string]string{
			"node-role.kubernetes.io/worker":        "",
			"node-role.kubernetes.io/control-plane": "true",
			"node-role.kubernetes.io/":              "",
			"kubernetes.io/role":                    "worker",
			"kubernetes.io/hostname":                "n",
		}, false, corev1.ConditionTrue), map[string]interface{}{"Roles": "control-plane,worker", "Status": "Ready"}},
		{"legacy role label needs a value", node(map[string]string{"kubernetes.io/role": ""}, false),
			map[string]interface{}{"Roles": "<none>"}},
		{"cordoned and not ready", node(nil, true, corev1.ConditionFalse),
			map[string]interface{}{"Status": "NotReady,SchedulingDisabled"}},
		{"ready unknown", node(nil, false, corev1.ConditionUnknown), map[string]interface{}{"Status": "NotReady"}},
		{"cordoned without conditions", node(nil, true), map[string]interface{}{"Status": "Unknown,SchedulingDisabled"}},
	})
}

func storageClass(annotations map[string]string) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{ObjectMeta: om("sc"), Provisioner: "p"}
	sc.Annotations = annotations
	return sc
}

func TestStorageClasses(t *testing.T) {
	checkCells(t, gr("storage.k8s.io", "storageclasses"), []cellCase{
		{"defaults", storageClass(nil), map[string]interface{}{
			"Name": "sc", "ReclaimPolicy": "Delete", "VolumeBindingMode": "Immediate", "AllowVolumeExpansion": false}},
		{"default class", storageClass(map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}),
			map[string]interface{}{"Name": "sc (default)"}},
		{"beta default class", storageClass(map[string]string{"storageclass.beta.kubernetes.io/is-default-class": "true"}),
			map[string]interface{}{"Name": "sc (default)"}},
		{"annotation must be exactly true", storageClass(map[string]string{"storageclass.kubernetes.io/is-default-class": "True"}),
			map[string]interface{}{"Name": "sc"}},
		{"retain", func() runtime.Object {
			sc := storageClass(nil)
			sc.ReclaimPolicy = ptr(corev1.PersistentVolumeReclaimRetain)
			return sc
		}(), map[string]interface{}{"ReclaimPolicy": "Retain"}},
	})
}

func TestPersistentVolumes(t *testing.T) {
	deleted := ago(time.Second)
	checkCells(t, core("persistentvolumes"), []cellCase{
		{"unbound, defaults", &corev1.PersistentVolume{ObjectMeta: om("pv")}, map[string]interface{}{
			"Capacity": "0", "Access Modes": "", "Reclaim Policy": "Retain", "Status": "Pending", "Claim": "",
			"StorageClass": "", "VolumeAttributesClass": "<unset>", "VolumeMode": "Filesystem"}},
		{"access modes in upstream order, once each", &corev1.PersistentVolume{ObjectMeta: om("pv"),
			Spec: corev1.PersistentVolumeSpec{AccessModes: []corev1.PersistentVolumeAccessMode{
				corev1.ReadWriteOncePod, corev1.ReadWriteMany, corev1.ReadOnlyMany, corev1.ReadWriteOnce, corev1.ReadWriteOnce}}},
			map[string]interface{}{"Access Modes": "RWO,ROX,RWX,RWOP"}},
		{"released with reason, beta class annotation wins", &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv", Annotations: map[string]string{"volume.beta.kubernetes.io/storage-class": "legacy"}},
			Spec: corev1.PersistentVolumeSpec{StorageClassName: "fast", VolumeAttributesClassName: ptr("gold"),
				ClaimRef: &corev1.ObjectReference{Namespace: "ns", Name: "c"}},
			Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeFailed, Reason: "ProvisioningFailed"}},
			map[string]interface{}{"StorageClass": "legacy", "VolumeAttributesClass": "gold", "Status": "Failed",
				"Reason": "ProvisioningFailed", "Claim": "ns/c", "Age": "<unknown>"}},
		{"terminating", &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv", DeletionTimestamp: &deleted},
			Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound}},
			map[string]interface{}{"Status": "Terminating"}},
	})
}

func TestPersistentVolumeClaims(t *testing.T) {
	deleted := ago(time.Second)
	checkCells(t, core("persistentvolumeclaims"), []cellCase{
		{"pending: no capacity or modes until bound", &corev1.PersistentVolumeClaim{ObjectMeta: om("c"),
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}},
			Status: corev1.PersistentVolumeClaimStatus{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Capacity: corev1.ResourceList{corev1.ResourceStorage: qty("1Gi")}}},
			map[string]interface{}{"Status": "Pending", "Volume": "", "Capacity": "", "Access Modes": "",
				"StorageClass": "", "VolumeAttributesClass": "<unset>", "VolumeMode": "Filesystem"}},
		{"terminating, beta class annotation", &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "c", DeletionTimestamp: &deleted,
				Annotations: map[string]string{"volume.beta.kubernetes.io/storage-class": "legacy"}},
			Spec:   corev1.PersistentVolumeClaimSpec{VolumeName: "pv", StorageClassName: ptr("fast")},
			Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}},
			map[string]interface{}{"Status": "Terminating", "StorageClass": "legacy", "Capacity": "0"}},
	})
}

func TestEvents(t *testing.T) {
	series := &corev1.Event{ObjectMeta: om("e"), InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p"},
		FirstTimestamp: ago(time.Hour), LastTimestamp: ago(30 * time.Minute), Count: 2,
		Series: &corev1.EventSeries{Count: 9, LastObservedTime: metav1.NewMicroTime(now.Add(-20 * time.Second))}}
	newAPI := &eventsv1.Event{ObjectMeta: om("e"), Regarding: corev1.ObjectReference{Kind: "Deployment", Name: "web"},
		EventTime:                metav1.NewMicroTime(now.Add(-4 * time.Hour)),
		DeprecatedSource:         corev1.EventSource{Component: "legacy"},
		ReportingController:      "deployment-controller",
		ReportingInstance:        "kcm-1",
		DeprecatedLastTimestamp:  ago(2 * time.Hour),
		DeprecatedFirstTimestamp: metav1.Time{},
		Series:                   &eventsv1.EventSeries{Count: 5, LastObservedTime: metav1.NewMicroTime(now.Add(-time.Minute))},
	}
	tests := []cellCase{
		{"series overrides last seen and count", series, map[string]interface{}{
			"Last Seen": "20s", "First Seen": "60m", "Count": int64(9), "Source": ""}},
		{"no timestamps at all", &corev1.Event{ObjectMeta: om("e"), InvolvedObject: corev1.ObjectReference{Kind: "ClusterRole"}},
			map[string]interface{}{"Last Seen": "<unknown>", "First Seen": "<unknown>", "Count": int64(1), "Object": "clusterrole"}},
		{"last seen falls back to first seen", &corev1.Event{ObjectMeta: om("e"), FirstTimestamp: ago(3 * time.Minute),
			Source: corev1.EventSource{Host: "n1"}, ReportingController: "kubelet"},
			map[string]interface{}{"Last Seen": "3m", "First Seen": "3m", "Source": "kubelet, n1"}},
		{"events.k8s.io fields map onto core ones", newAPI, map[string]interface{}{
			"Object": "deployment/web", "First Seen": "4h", "Last Seen": "60s", "Count": int64(5),
			"Source": "legacy, kcm-1"}},
	}
	checkCells(t, core("events"), tests)
	checkCells(t, gr("events.k8s.io", "events"), tests)
}

func TestEndpointsAndSlices(t *testing.T) {
	checkCells(t, core("endpoints"), []cellCase{
		{"no subsets", &corev1.Endpoints{ObjectMeta: om("e")}, map[string]interface{}{"Endpoints": "<none>"}},
		{"headless without ports", &corev1.Endpoints{ObjectMeta: om("e"), Subsets: []corev1.EndpointSubset{
			{Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1"}, {IP: "fd00::2"}}}}},
			map[string]interface{}{"Endpoints": "10.0.0.1,fd00::2"}},
		{"ipv6 with port", &corev1.Endpoints{ObjectMeta: om("e"), Subsets: []corev1.EndpointSubset{
			{Addresses: []corev1.EndpointAddress{{IP: "fd00::2"}}, Ports: []corev1.EndpointPort{{Port: 8080}}}}},
			map[string]interface{}{"Endpoints": "[fd00::2]:8080"}},
		{"only not-ready addresses", &corev1.Endpoints{ObjectMeta: om("e"), Subsets: []corev1.EndpointSubset{
			{NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.0.0.1"}}, Ports: []corev1.EndpointPort{{Port: 80}}}}},
			map[string]interface{}{"Endpoints": ""}},
	})
	checkCells(t, gr("discovery.k8s.io", "endpointslices"), []cellCase{
		{"empty", &discoveryv1.EndpointSlice{ObjectMeta: om("s"), AddressType: discoveryv1.AddressTypeFQDN},
			map[string]interface{}{"AddressType": "FQDN", "Ports": "<unset>", "Endpoints": "<unset>"}},
		{"many ports", &discoveryv1.EndpointSlice{ObjectMeta: om("s"), Ports: []discoveryv1.EndpointPort{
			{Port: ptr(int32(1))}, {Port: ptr(int32(2))}, {Port: ptr(int32(3))}, {Port: ptr(int32(4))}, {Port: ptr(int32(5))}}},
			map[string]interface{}{"Ports": "1,2,3 + 2 more..."}},
	})
}

func TestWorkloadDefaultsAndEdges(t *testing.T) {
	checkCells(t, gr("apps", "controllerrevisions"), []cellCase{
		{"no controller", &appsv1.ControllerRevision{ObjectMeta: om("r"), Revision: 1},
			map[string]interface{}{"Controller": "<none>", "Revision": int64(1)}},
		{"core group owner", &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "r",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "p", Controller: ptr(true)}}}},
			map[string]interface{}{"Controller": "pod/p"}},
	})
	checkCells(t, gr("apps", "statefulsets"), []cellCase{
		{"unset replicas default to one", &appsv1.StatefulSet{ObjectMeta: om("s")}, map[string]interface{}{"Ready": "0/1"}},
	})
	checkCells(t, gr("apps", "replicasets"), []cellCase{
		{"nil selector", &appsv1.ReplicaSet{ObjectMeta: om("r"), Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(0))}},
			map[string]interface{}{"Desired": int64(0), "Selector": "<none>", "Containers": "", "Images": ""}},
	})
	checkCells(t, gr("apps", "deployments"), []cellCase{
		{"invalid selector", &appsv1.Deployment{ObjectMeta: om("d"), Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}}},
			map[string]interface{}{"Selector": "<invalid>"}},
	})
	checkCells(t, core("replicationcontrollers"), []cellCase{
		{"no template, unset replicas", &corev1.ReplicationController{ObjectMeta: om("rc")},
			map[string]interface{}{"Desired": int64(1), "Containers": "", "Selector": "<none>"}},
	})
	checkCells(t, gr("storage.k8s.io", "csidrivers"), []cellCase{
		{"defaults", &storagev1.CSIDriver{ObjectMeta: om("d")}, map[string]interface{}{
			"AttachRequired": true, "PodInfoOnMount": false, "StorageCapacity": false,
			"TokenRequests": "<unset>", "RequiresRepublish": false, "Modes": "Persistent"}},
		{"empty token requests", &storagev1.CSIDriver{ObjectMeta: om("d"),
			Spec: storagev1.CSIDriverSpec{TokenRequests: []storagev1.TokenRequest{}}},
			map[string]interface{}{"TokenRequests": ""}},
	})
	checkCells(t, core("secrets"), []cellCase{
		{"unset type is Opaque", &corev1.Secret{ObjectMeta: om("s")}, map[string]interface{}{"Type": "Opaque", "Data": int64(0)}},
	})
	checkCells(t, core("namespaces"), []cellCase{
		{"unset phase is Active", &corev1.Namespace{ObjectMeta: om("n")}, map[string]interface{}{"Status": "Active"}},
	})
}
