package printers

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Node role labels: node-role.kubernetes.io/<role> (any value) and the older
// kubernetes.io/role=<role>.
const (
	nodeRoleLabelPrefix = "node-role.kubernetes.io/"
	legacyNodeRoleLabel = "kubernetes.io/role"
)

func namespacePrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Status", "string", "The status of the namespace"),
			ageColumn(),
		},
		Row: rowOf(func(ns *corev1.Namespace, now time.Time) ([]interface{}, error) {
			phase := ns.Status.Phase
			if phase == "" {
				phase = corev1.NamespaceActive // the API default
			}
			return []interface{}{ns.Name, string(phase), since(ns.CreationTimestamp, now)}, nil
		}),
	}
}

func nodePrinter() Printer {
	info := corev1.NodeSystemInfo{}.SwaggerDoc()
	addrs := corev1.NodeStatus{}.SwaggerDoc()["addresses"]
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Status", "string", "The status of the node"),
			col("Roles", "string", "The roles of the node"),
			ageColumn(),
			col("Version", "string", info["kubeletVersion"]),
			wideCol("Internal-IP", "string", addrs),
			wideCol("External-IP", "string", addrs),
			wideCol("OS-Image", "string", info["osImage"]),
			wideCol("Kernel-Version", "string", info["kernelVersion"]),
			wideCol("Container-Runtime", "string", info["containerRuntimeVersion"]),
		},
		Row: rowOf(nodeRow),
	}
}

func nodeRow(node *corev1.Node, now time.Time) ([]interface{}, error) {
	status := "Unknown"
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			// The last Ready condition wins, as in upstream's map lookup.
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if node.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	roles := orNone(strings.Join(nodeRoles(node), ","))
	unknown := func(s string) string {
		if s == "" {
			return "<unknown>"
		}
		return s
	}
	ni := node.Status.NodeInfo
	return []interface{}{
		node.Name, status, roles, since(node.CreationTimestamp, now), ni.KubeletVersion,
		nodeAddress(node, corev1.NodeInternalIP), nodeAddress(node, corev1.NodeExternalIP),
		unknown(ni.OSImage), unknown(ni.KernelVersion), unknown(ni.ContainerRuntimeVersion),
	}, nil
}

// nodeRoles returns the sorted, de-duplicated roles named by the node's labels.
func nodeRoles(node *corev1.Node) []string {
	set := map[string]bool{}
	for k, v := range node.Labels {
		if role, ok := strings.CutPrefix(k, nodeRoleLabelPrefix); ok {
			if role != "" {
				set[role] = true
			}
		} else if k == legacyNodeRoleLabel && v != "" {
			set[v] = true
		}
	}
	roles := make([]string, 0, len(set))
	for r := range set {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	return roles
}

func nodeAddress(node *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range node.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func configMapPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Data", "string", corev1.ConfigMap{}.SwaggerDoc()["data"]),
			ageColumn(),
		},
		Row: rowOf(func(cm *corev1.ConfigMap, now time.Time) ([]interface{}, error) {
			return []interface{}{cm.Name, int64(len(cm.Data) + len(cm.BinaryData)), since(cm.CreationTimestamp, now)}, nil
		}),
	}
}

func secretPrinter() Printer {
	doc := corev1.Secret{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Type", "string", doc["type"]),
			col("Data", "string", doc["data"]),
			ageColumn(),
		},
		Row: rowOf(func(s *corev1.Secret, now time.Time) ([]interface{}, error) {
			typ := s.Type
			if typ == "" {
				typ = corev1.SecretTypeOpaque // the API default
			}
			// The apiserver merges write-only stringData into data.
			keys := len(s.Data)
			for k := range s.StringData {
				if _, dup := s.Data[k]; !dup {
					keys++
				}
			}
			return []interface{}{s.Name, string(typ), int64(keys), since(s.CreationTimestamp, now)}, nil
		}),
	}
}

func serviceAccountPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Secrets", "string", corev1.ServiceAccount{}.SwaggerDoc()["secrets"]),
			ageColumn(),
		},
		Row: rowOf(func(sa *corev1.ServiceAccount, now time.Time) ([]interface{}, error) {
			return []interface{}{sa.Name, int64(len(sa.Secrets)), since(sa.CreationTimestamp, now)}, nil
		}),
	}
}

func servicePrinter() Printer {
	doc := corev1.ServiceSpec{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Type", "string", doc["type"]),
			col("Cluster-IP", "string", doc["clusterIP"]),
			col("External-IP", "string", doc["externalIPs"]),
			col("Port(s)", "string", doc["ports"]),
			ageColumn(),
			wideCol("Selector", "string", doc["selector"]),
		},
		Row: rowOf(serviceRow),
	}
}

func serviceRow(svc *corev1.Service, now time.Time) ([]interface{}, error) {
	typ := svc.Spec.Type
	if typ == "" {
		typ = corev1.ServiceTypeClusterIP // the API default
	}
	// ClusterIPs is filled from ClusterIP by the API defaults when empty.
	clusterIP := orNone(svc.Spec.ClusterIP)
	if len(svc.Spec.ClusterIPs) > 0 {
		clusterIP = svc.Spec.ClusterIPs[0]
	}
	return []interface{}{
		svc.Name, string(typ), clusterIP, serviceExternalIP(svc, typ),
		orNone(servicePorts(svc.Spec.Ports)), since(svc.CreationTimestamp, now),
		labels.FormatLabels(svc.Spec.Selector),
	}, nil
}

// serviceExternalIP renders the External-IP cell. The apiserver prints tables
// in wide mode, so load-balancer addresses are never shortened.
func serviceExternalIP(svc *corev1.Service, typ corev1.ServiceType) string {
	external := svc.Spec.ExternalIPs
	switch typ {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
		if len(external) > 0 {
			return strings.Join(external, ",")
		}
		return "<none>"
	case corev1.ServiceTypeLoadBalancer:
		seen := map[string]bool{}
		var lb []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			addr := in.IP
			if addr == "" {
				addr = in.Hostname
			}
			if addr != "" && !seen[addr] {
				seen[addr] = true
				lb = append(lb, addr)
			}
		}
		sort.Strings(lb)
		all := append(lb, external...)
		if len(all) == 0 {
			return "<pending>"
		}
		return strings.Join(all, ",")
	case corev1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	}
	return "<unknown>"
}

func servicePorts(ports []corev1.ServicePort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP // the API default
		}
		if p.NodePort > 0 {
			parts[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, proto)
		} else {
			parts[i] = fmt.Sprintf("%d/%s", p.Port, proto)
		}
	}
	return strings.Join(parts, ",")
}

func endpointsPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Endpoints", "string", corev1.Endpoints{}.SwaggerDoc()["subsets"]),
			ageColumn(),
		},
		Row: rowOf(func(ep *corev1.Endpoints, now time.Time) ([]interface{}, error) {
			return []interface{}{ep.Name, formatEndpoints(ep), since(ep.CreationTimestamp, now)}, nil
		}),
	}
}

// formatEndpoints lists up to three addresses (ip:port for every port of a
// subset, bare IPs for port-less subsets) and counts the rest.
func formatEndpoints(ep *corev1.Endpoints) string {
	if len(ep.Subsets) == 0 {
		return "<none>"
	}
	const limit = 3
	var list []string
	total := 0
	for _, ss := range ep.Subsets {
		if len(ss.Ports) == 0 {
			total += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) < limit {
					list = append(list, a.IP)
				}
			}
			continue
		}
		for _, p := range ss.Ports {
			total += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) < limit {
					list = append(list, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
				}
			}
		}
	}
	if total > limit {
		return fmt.Sprintf("%s + %d more...", strings.Join(list, ","), total-limit)
	}
	return strings.Join(list, ",")
}

func replicationControllerPrinter() Printer {
	spec := corev1.ReplicationControllerSpec{}.SwaggerDoc()
	status := corev1.ReplicationControllerStatus{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Desired", "integer", spec["replicas"]),
			col("Current", "integer", status["replicas"]),
			col("Ready", "integer", status["readyReplicas"]),
			ageColumn(),
			wideCol("Containers", "string", containersDoc),
			wideCol("Images", "string", imagesDoc),
			wideCol("Selector", "string", spec["selector"]),
		},
		Row: rowOf(func(rc *corev1.ReplicationController, now time.Time) ([]interface{}, error) {
			var containers []corev1.Container
			if rc.Spec.Template != nil {
				containers = rc.Spec.Template.Spec.Containers
			}
			names, images := containerCells(containers)
			return []interface{}{
				rc.Name, int64(derefInt32(rc.Spec.Replicas, 1)), int64(rc.Status.Replicas),
				int64(rc.Status.ReadyReplicas), since(rc.CreationTimestamp, now),
				names, images, labels.FormatLabels(rc.Spec.Selector),
			}, nil
		}),
	}
}
