package printers

import (
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// now is the fixed clock every test measures ages against.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

// om is object metadata created five hours before now (Age "5h").
func om(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: ago(5 * time.Hour)}
}

func ptr[T any](v T) *T { return &v }

func qty(s string) resource.Quantity { return resource.MustParse(s) }

func core(resource string) schema.GroupResource { return schema.GroupResource{Resource: resource} }

func gr(group, resource string) schema.GroupResource {
	return schema.GroupResource{Group: group, Resource: resource}
}

func podTemplate(labels map[string]string, containers ...corev1.Container) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: containers},
	}
}

// cells prints obj with the printer for r, checking the row's width.
func cells(t *testing.T, r schema.GroupResource, obj runtime.Object) []interface{} {
	t.Helper()
	p, ok := For(r)
	if !ok {
		t.Fatalf("For(%v): no printer", r)
	}
	got, err := p.Row(obj, now)
	if err != nil {
		t.Fatalf("Row(%v): %v", r, err)
	}
	if len(got) != len(p.Columns) {
		t.Fatalf("Row(%v): %d cells for %d columns", r, len(got), len(p.Columns))
	}
	return got
}

func headers(p Printer) string {
	names := make([]string, len(p.Columns))
	for i, c := range p.Columns {
		names[i] = c.Name
		if c.Priority == 1 {
			names[i] += "*"
		}
	}
	return strings.Join(names, "|")
}

// TestResources prints one object of every served resource and checks the
// headers (wide-only columns marked with *) and the whole row.
func TestResources(t *testing.T) {
	labels := map[string]string{"app": "web"}
	selector := &metav1.LabelSelector{MatchLabels: labels}
	tests := []struct {
		gr      schema.GroupResource
		obj     runtime.Object
		headers string
		want    []interface{}
	}{{
		core("namespaces"),
		&corev1.Namespace{ObjectMeta: om("team-a"), Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}},
		"Name|Status|Age",
		[]interface{}{"team-a", "Terminating", "5h"},
	}, {
		core("nodes"),
		&corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", CreationTimestamp: ago(72 * time.Hour),
				Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
			Status: corev1.NodeStatus{
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n1"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
				NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.33.1", OSImage: "Debian GNU/Linux 12",
					KernelVersion: "6.1.0", ContainerRuntimeVersion: "containerd://2.0.4"},
			},
		},
		"Name|Status|Roles|Age|Version|Internal-IP*|External-IP*|OS-Image*|Kernel-Version*|Container-Runtime*",
		[]interface{}{"n1", "Ready", "control-plane", "3d", "v1.33.1", "10.0.0.1", "<none>", "Debian GNU/Linux 12", "6.1.0", "containerd://2.0.4"},
	}, {
		core("pods"),
		&corev1.Pod{
			ObjectMeta: om("web-0"),
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd00::5"}},
				ContainerStatuses: []corev1.ContainerStatus{running("c", true)}},
		},
		"Name|Ready|Status|Restarts|Age|IP*|Node*|Nominated Node*|Readiness Gates*",
		[]interface{}{"web-0", "1/1", "Running", "0", "5h", "10.1.0.5", "n1", "<none>", "<none>"},
	}, {
		core("persistentvolumes"),
		&corev1.PersistentVolume{
			ObjectMeta: om("pv1"),
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: qty("10Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				ClaimRef:                      &corev1.ObjectReference{Namespace: "apps", Name: "data"},
				StorageClassName:              "fast",
			},
			Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
		},
		"Name|Capacity|Access Modes|Reclaim Policy|Status|Claim|StorageClass|VolumeAttributesClass|Reason|Age|VolumeMode*",
		[]interface{}{"pv1", "10Gi", "RWO,RWX", "Delete", "Bound", "apps/data", "fast", "<unset>", "", "5h", "Filesystem"},
	}, {
		core("persistentvolumeclaims"),
		&corev1.PersistentVolumeClaim{
			ObjectMeta: om("data"),
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv1", StorageClassName: ptr("fast"),
				VolumeAttributesClassName: ptr("gold"), VolumeMode: ptr(corev1.PersistentVolumeBlock)},
			Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound,
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: qty("1Gi")}},
		},
		"Name|Status|Volume|Capacity|Access Modes|StorageClass|VolumeAttributesClass|Age|VolumeMode*",
		[]interface{}{"data", "Bound", "pv1", "1Gi", "RWO", "fast", "gold", "5h", "Block"},
	}, {
		core("configmaps"),
		&corev1.ConfigMap{ObjectMeta: om("cfg"), Data: map[string]string{"a": "1", "b": "2"}, BinaryData: map[string][]byte{"c": nil}},
		"Name|Data|Age",
		[]interface{}{"cfg", int64(3), "5h"},
	}, {
		core("secrets"),
		&corev1.Secret{ObjectMeta: om("tls"), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": nil, "tls.key": nil}, StringData: map[string]string{"tls.key": "k", "ca.crt": "c"}},
		"Name|Type|Data|Age",
		[]interface{}{"tls", "kubernetes.io/tls", int64(3), "5h"},
	}, {
		core("services"),
		&corev1.Service{ObjectMeta: om("web"), Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Selector: labels,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 443, NodePort: 30443, Protocol: corev1.ProtocolTCP}}}},
		"Name|Type|Cluster-IP|External-IP|Port(s)|Age|Selector*",
		[]interface{}{"web", "NodePort", "10.96.0.10", "<none>", "80/TCP,443:30443/TCP", "5h", "app=web"},
	}, {
		core("endpoints"),
		&corev1.Endpoints{ObjectMeta: om("web"), Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}},
			Ports:     []corev1.EndpointPort{{Port: 80}, {Port: 443}}}}},
		"Name|Endpoints|Age",
		[]interface{}{"web", "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...", "5h"},
	}, {
		core("events"),
		&corev1.Event{ObjectMeta: om("web-0.17f"), InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web-0", FieldPath: "spec.containers{c}"},
			Type: "Normal", Reason: "Pulled", Message: " Pulled image \n", Source: corev1.EventSource{Component: "kubelet", Host: "n1"},
			FirstTimestamp: ago(10 * time.Minute), LastTimestamp: ago(90 * time.Second), Count: 4},
		"Last Seen|Type|Reason|Object|Subobject*|Source*|Message|First Seen*|Count*|Name*",
		[]interface{}{"90s", "Normal", "Pulled", "pod/web-0", "spec.containers{c}", "kubelet, n1", "Pulled image", "10m", int64(4), "web-0.17f"},
	}, {
		core("serviceaccounts"),
		&corev1.ServiceAccount{ObjectMeta: om("builder"), Secrets: []corev1.ObjectReference{{Name: "tok"}}},
		"Name|Secrets|Age",
		[]interface{}{"builder", int64(1), "5h"},
	}, {
		core("replicationcontrollers"),
		&corev1.ReplicationController{ObjectMeta: om("rc"),
			Spec: corev1.ReplicationControllerSpec{Replicas: ptr(int32(3)), Selector: labels,
				Template: ptr(podTemplate(labels, corev1.Container{Name: "a", Image: "img-a"}, corev1.Container{Name: "b", Image: "img-b"}))},
			Status: corev1.ReplicationControllerStatus{Replicas: 2, ReadyReplicas: 1}},
		"Name|Desired|Current|Ready|Age|Containers*|Images*|Selector*",
		[]interface{}{"rc", int64(3), int64(2), int64(1), "5h", "a,b", "img-a,img-b", "app=web"},
	}, {
		gr("storage.k8s.io", "storageclasses"),
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "standard", CreationTimestamp: ago(5 * time.Hour),
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
			Provisioner: "csi.example.com", VolumeBindingMode: ptr(storagev1.VolumeBindingWaitForFirstConsumer), AllowVolumeExpansion: ptr(true)},
		"Name|Provisioner|ReclaimPolicy|VolumeBindingMode|AllowVolumeExpansion|Age",
		[]interface{}{"standard (default)", "csi.example.com", "Delete", "WaitForFirstConsumer", true, "5h"},
	}, {
		gr("storage.k8s.io", "csidrivers"),
		&storagev1.CSIDriver{ObjectMeta: om("csi.example.com"), Spec: storagev1.CSIDriverSpec{
			AttachRequired: ptr(false), PodInfoOnMount: ptr(true),
			TokenRequests:        []storagev1.TokenRequest{{Audience: "vault"}, {Audience: "gcp"}},
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent, storagev1.VolumeLifecycleEphemeral}}},
		"Name|AttachRequired|PodInfoOnMount|StorageCapacity|TokenRequests|RequiresRepublish|Modes|Age",
		[]interface{}{"csi.example.com", false, true, false, "vault,gcp", false, "Persistent,Ephemeral", "5h"},
	}, {
		gr("storage.k8s.io", "csinodes"),
		&storagev1.CSINode{ObjectMeta: om("n1"), Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: "a"}, {Name: "b"}}}},
		"Name|Drivers|Age",
		[]interface{}{"n1", int64(2), "5h"},
	}, {
		gr("storage.k8s.io", "volumeattachments"),
		&storagev1.VolumeAttachment{ObjectMeta: om("csi-123"), Spec: storagev1.VolumeAttachmentSpec{Attacher: "csi.example.com",
			NodeName: "n1", Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr("pv1")}},
			Status: storagev1.VolumeAttachmentStatus{Attached: true}},
		"Name|Attacher|PV|Node|Attached|Age",
		[]interface{}{"csi-123", "csi.example.com", "pv1", "n1", true, "5h"},
	}, {
		gr("apps", "statefulsets"),
		&appsv1.StatefulSet{ObjectMeta: om("web"), Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(3)),
			Template: podTemplate(labels, corev1.Container{Name: "nginx", Image: "nginx:1.27"})},
			Status: appsv1.StatefulSetStatus{ReadyReplicas: 2}},
		"Name|Ready|Age|Containers*|Images*",
		[]interface{}{"web", "2/3", "5h", "nginx", "nginx:1.27"},
	}, {
		gr("apps", "daemonsets"),
		&appsv1.DaemonSet{ObjectMeta: om("agent"), Spec: appsv1.DaemonSetSpec{Selector: selector,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
				Containers: []corev1.Container{{Name: "agent", Image: "agent:1"}}}}},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, NumberReady: 2, UpdatedNumberScheduled: 3, NumberAvailable: 2}},
		"Name|Desired|Current|Ready|Up-to-date|Available|Node Selector|Age|Containers*|Images*|Selector*",
		[]interface{}{"agent", int64(3), int64(3), int64(2), int64(3), int64(2), "kubernetes.io/os=linux", "5h", "agent", "agent:1", "app=web"},
	}, {
		gr("apps", "controllerrevisions"),
		&appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "web-6d4f", CreationTimestamp: ago(5 * time.Hour),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web", Controller: ptr(true)}}},
			Revision: 2},
		"Name|Controller|Revision|Age",
		[]interface{}{"web-6d4f", "statefulset.apps/web", int64(2), "5h"},
	}, {
		gr("apps", "replicasets"),
		&appsv1.ReplicaSet{ObjectMeta: om("web-5c"), Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(3)), Selector: selector,
			Template: podTemplate(labels, corev1.Container{Name: "c", Image: "i"})},
			Status: appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 2}},
		"Name|Desired|Current|Ready|Age|Containers*|Images*|Selector*",
		[]interface{}{"web-5c", int64(3), int64(3), int64(2), "5h", "c", "i", "app=web"},
	}, {
		gr("apps", "deployments"),
		&appsv1.Deployment{ObjectMeta: om("web"), Spec: appsv1.DeploymentSpec{Selector: selector,
			Template: podTemplate(labels, corev1.Container{Name: "c", Image: "i"})},
			Status: appsv1.DeploymentStatus{ReadyReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 0}},
		"Name|Ready|Up-to-date|Available|Age|Containers*|Images*|Selector*",
		[]interface{}{"web", "1/1", int64(1), int64(0), "5h", "c", "i", "app=web"},
	}, {
		gr("coordination.k8s.io", "leases"),
		&coordinationv1.Lease{ObjectMeta: om("kube-scheduler"), Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("node-1_abc")}},
		"Name|Holder|Age",
		[]interface{}{"kube-scheduler", "node-1_abc", "5h"},
	}, {
		gr("events.k8s.io", "events"),
		&eventsv1.Event{ObjectMeta: om("ev"), Regarding: corev1.ObjectReference{Kind: "Node", Name: "n1"},
			Type: "Warning", Reason: "Rebooted", Note: "node rebooted", ReportingController: "kubelet", ReportingInstance: "n1",
			EventTime: metav1.NewMicroTime(now.Add(-3 * time.Minute))},
		"Last Seen|Type|Reason|Object|Subobject*|Source*|Message|First Seen*|Count*|Name*",
		[]interface{}{"3m", "Warning", "Rebooted", "node/n1", "", "kubelet, n1", "node rebooted", "3m", int64(1), "ev"},
	}, {
		gr("discovery.k8s.io", "endpointslices"),
		&discoveryv1.EndpointSlice{ObjectMeta: om("web-x7"), AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Port: ptr(int32(80))}, {Name: ptr("metrics")}, {}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1", "10.0.0.2"}},
				{Addresses: []string{"10.0.0.3"}}, {Addresses: []string{"10.0.0.4"}}}},
		"Name|AddressType|Ports|Endpoints|Age",
		[]interface{}{"web-x7", "IPv4", "80,metrics,*", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...", "5h"},
	}, {
		gr("certificates.k8s.io", "certificatesigningrequests"),
		&certificatesv1.CertificateSigningRequest{ObjectMeta: om("node-csr-abc"),
			Spec: certificatesv1.CertificateSigningRequestSpec{SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
				Username: "system:bootstrap:abcdef", ExpirationSeconds: ptr(int32(86400))},
			Status: certificatesv1.CertificateSigningRequestStatus{Certificate: []byte("x"),
				Conditions: []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}}},
		"Name|Age|SignerName|Requestor|RequestedDuration|Condition",
		[]interface{}{"node-csr-abc", "5h", "kubernetes.io/kube-apiserver-client-kubelet", "system:bootstrap:abcdef", "24h", "Approved,Issued"},
	}}

	covered := map[schema.GroupResource]bool{}
	for _, tt := range tests {
		t.Run(tt.gr.String(), func(t *testing.T) {
			covered[tt.gr] = true
			p, _ := For(tt.gr)
			if got := headers(p); got != tt.headers {
				t.Errorf("headers:\n got %s\nwant %s", got, tt.headers)
			}
			if got := cells(t, tt.gr, tt.obj); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("row:\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
	for r := range registry {
		if !covered[r] {
			t.Errorf("no test row for %v", r)
		}
	}
}

func TestColumnMetadata(t *testing.T) {
	nameDoc := metav1.ObjectMeta{}.SwaggerDoc()["name"]
	ageDoc := metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]
	for r := range registry {
		p, _ := For(r)
		for _, c := range p.Columns {
			if c.Description == "" {
				t.Errorf("%v: column %q has no description", r, c.Name)
			}
			switch c.Type {
			case "string", "integer", "boolean":
			default:
				t.Errorf("%v: column %q has type %q", r, c.Name, c.Type)
			}
			if c.Name == "Name" && (c.Format != "name" || c.Description != nameDoc) {
				t.Errorf("%v: Name column is %+v", r, c)
			}
			if c.Name == "Age" && c.Description != ageDoc {
				t.Errorf("%v: Age column is %+v", r, c)
			}
		}
	}
}

func TestForUnknownAndIsolation(t *testing.T) {
	if _, ok := For(gr("batch", "jobs")); ok {
		t.Error("For(jobs) found a printer")
	}
	if _, ok := For(gr("", "storageclasses")); ok {
		t.Error("For matched storageclasses in the core group")
	}
	a, _ := For(core("pods"))
	a.Columns[0].Name = "changed"
	if b, _ := For(core("pods")); b.Columns[0].Name != "Name" {
		t.Error("For shares column slices between callers")
	}
}

func TestWrongObjectType(t *testing.T) {
	p, _ := For(core("pods"))
	if _, err := p.Row(&corev1.Node{}, now); err == nil {
		t.Error("pod printer accepted a node")
	}
	if _, err := p.Row((*corev1.Pod)(nil), now); err == nil {
		t.Error("pod printer accepted a nil pod")
	}
	e, _ := For(core("events"))
	if _, err := e.Row(&corev1.Pod{}, now); err == nil {
		t.Error("event printer accepted a pod")
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	if got := headers(p); got != "Name|Created At" {
		t.Fatalf("headers = %s", got)
	}
	if p.Columns[1].Type != "date" || p.Columns[0].Format != "name" {
		t.Errorf("columns = %+v", p.Columns)
	}
	obj := &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Name: "lr",
		CreationTimestamp: metav1.NewTime(time.Date(2025, 6, 1, 14, 0, 0, 0, time.FixedZone("CEST", 2*3600)))}}
	got, err := p.Row(obj, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Row((*corev1.LimitRange)(nil), now); err == nil {
		t.Error("Default accepted a nil object")
	}
	if want := []interface{}{"lr", "2025-06-01T12:00:00Z"}; !reflect.DeepEqual(got, want) {
		t.Errorf("row = %v, want %v", got, want)
	}
}

func TestAges(t *testing.T) {
	for _, tt := range []struct {
		t    metav1.Time
		want string
	}{
		{metav1.Time{}, "<unknown>"},
		{ago(30 * time.Second), "30s"},
		{ago(150 * time.Second), "2m30s"},
		{ago(5 * time.Hour), "5h"},
		{ago(50 * time.Hour), "2d2h"},
		{metav1.NewTime(now.Add(time.Minute)), "<invalid>"},
	} {
		if got := since(tt.t, now); got != tt.want {
			t.Errorf("since(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestCSRCondition(t *testing.T) {
	cond := func(types ...certificatesv1.RequestConditionType) []certificatesv1.CertificateSigningRequestCondition {
		var out []certificatesv1.CertificateSigningRequestCondition
		for _, ty := range types {
			out = append(out, certificatesv1.CertificateSigningRequestCondition{Type: ty, Status: corev1.ConditionTrue})
		}
		return out
	}
	for _, tt := range []struct {
		conditions []certificatesv1.RequestConditionType
		issued     bool
		want       string
	}{
		{nil, false, "Pending"},
		{[]certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, false, "Approved"},
		{[]certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, true, "Approved,Issued"},
		{[]certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateFailed}, false, "Approved,Failed"},
		{[]certificatesv1.RequestConditionType{certificatesv1.CertificateDenied}, false, "Denied"},
	} {
		csr := &certificatesv1.CertificateSigningRequest{Status: certificatesv1.CertificateSigningRequestStatus{Conditions: cond(tt.conditions...)}}
		if tt.issued {
			csr.Status.Certificate = []byte("x")
		}
		if got := csrCondition(csr); got != tt.want {
			t.Errorf("%v issued=%v: got %q, want %q", tt.conditions, tt.issued, got, tt.want)
		}
	}
}
