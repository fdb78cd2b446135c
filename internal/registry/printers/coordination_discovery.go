package printers

import (
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	discoveryv1beta1 "k8s.io/api/discovery/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func leasePrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Holder", "string", coordinationv1.LeaseSpec{}.SwaggerDoc()["holderIdentity"]),
			ageColumn(),
		},
		Row: rowOf(func(l *coordinationv1.Lease, now time.Time) ([]interface{}, error) {
			holder := ""
			if l.Spec.HolderIdentity != nil {
				holder = *l.Spec.HolderIdentity
			}
			return []interface{}{l.Name, holder, since(l.CreationTimestamp, now)}, nil
		}),
	}
}

func endpointSlicePrinter() Printer {
	// Upstream takes these descriptions from the v1beta1 docs.
	doc := discoveryv1beta1.EndpointSlice{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("AddressType", "string", doc["addressType"]),
			col("Ports", "string", doc["ports"]),
			col("Endpoints", "string", doc["endpoints"]),
			ageColumn(),
		},
		Row: rowOf(func(es *discoveryv1.EndpointSlice, now time.Time) ([]interface{}, error) {
			const limit = 3
			ports := make([]string, 0, len(es.Ports))
			for _, p := range es.Ports {
				switch {
				case p.Port != nil:
					ports = append(ports, strconv.Itoa(int(*p.Port)))
				case p.Name != nil:
					ports = append(ports, *p.Name)
				default:
					ports = append(ports, "*")
				}
			}
			var addrs []string
			for _, ep := range es.Endpoints {
				addrs = append(addrs, ep.Addresses...)
			}
			return []interface{}{
				es.Name, string(es.AddressType),
				listWithMore(ports, limit), listWithMore(addrs, limit),
				since(es.CreationTimestamp, now),
			}, nil
		}),
	}
}
