package printers

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations that mark a StorageClass as the cluster default when "true".
const (
	defaultClassAnnotation     = "storageclass.kubernetes.io/is-default-class"
	betaDefaultClassAnnotation = "storageclass.beta.kubernetes.io/is-default-class"
)

func storageClassPrinter() Printer {
	doc := storagev1.StorageClass{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Provisioner", "string", doc["provisioner"]),
			col("ReclaimPolicy", "string", doc["reclaimPolicy"]),
			col("VolumeBindingMode", "string", doc["volumeBindingMode"]),
			col("AllowVolumeExpansion", "string", doc["allowVolumeExpansion"]),
			ageColumn(),
		},
		Row: rowOf(func(sc *storagev1.StorageClass, now time.Time) ([]interface{}, error) {
			name := sc.Name
			if sc.Annotations[defaultClassAnnotation] == "true" || sc.Annotations[betaDefaultClassAnnotation] == "true" {
				name += " (default)"
			}
			policy := string(corev1.PersistentVolumeReclaimDelete)
			if sc.ReclaimPolicy != nil {
				policy = string(*sc.ReclaimPolicy)
			}
			binding := string(storagev1.VolumeBindingImmediate)
			if sc.VolumeBindingMode != nil {
				binding = string(*sc.VolumeBindingMode)
			}
			return []interface{}{
				name, sc.Provisioner, policy, binding, derefBool(sc.AllowVolumeExpansion, false),
				since(sc.CreationTimestamp, now),
			}, nil
		}),
	}
}

func csiDriverPrinter() Printer {
	doc := storagev1.CSIDriverSpec{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("AttachRequired", "boolean", doc["attachRequired"]),
			col("PodInfoOnMount", "boolean", doc["podInfoOnMount"]),
			col("StorageCapacity", "boolean", doc["storageCapacity"]),
			col("TokenRequests", "string", doc["tokenRequests"]),
			col("RequiresRepublish", "boolean", doc["requiresRepublish"]),
			col("Modes", "string", doc["volumeLifecycleModes"]),
			ageColumn(),
		},
		Row: rowOf(func(d *storagev1.CSIDriver, now time.Time) ([]interface{}, error) {
			tokens := "<unset>"
			if d.Spec.TokenRequests != nil {
				auds := make([]string, len(d.Spec.TokenRequests))
				for i, t := range d.Spec.TokenRequests {
					auds[i] = t.Audience
				}
				tokens = strings.Join(auds, ",")
			}
			lifecycle := d.Spec.VolumeLifecycleModes
			if len(lifecycle) == 0 {
				// The API defaults an empty list to Persistent.
				lifecycle = []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}
			}
			modes := make([]string, len(lifecycle))
			for i, m := range lifecycle {
				modes[i] = string(m)
			}
			return []interface{}{
				d.Name,
				derefBool(d.Spec.AttachRequired, true),
				derefBool(d.Spec.PodInfoOnMount, false),
				derefBool(d.Spec.StorageCapacity, false),
				tokens,
				derefBool(d.Spec.RequiresRepublish, false),
				orNone(strings.Join(modes, ",")),
				since(d.CreationTimestamp, now),
			}, nil
		}),
	}
}

func csiNodePrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Drivers", "integer", "Drivers indicates the number of CSI drivers registered on the node"),
			ageColumn(),
		},
		Row: rowOf(func(n *storagev1.CSINode, now time.Time) ([]interface{}, error) {
			return []interface{}{n.Name, int64(len(n.Spec.Drivers)), since(n.CreationTimestamp, now)}, nil
		}),
	}
}

func volumeAttachmentPrinter() Printer {
	spec := storagev1.VolumeAttachmentSpec{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			// Upstream marks Attacher with the "name" format as well.
			{Name: "Attacher", Type: "string", Format: "name", Description: spec["attacher"]},
			col("PV", "string", storagev1.VolumeAttachmentSource{}.SwaggerDoc()["persistentVolumeName"]),
			col("Node", "string", spec["nodeName"]),
			col("Attached", "boolean", storagev1.VolumeAttachmentStatus{}.SwaggerDoc()["attached"]),
			ageColumn(),
		},
		Row: rowOf(func(va *storagev1.VolumeAttachment, now time.Time) ([]interface{}, error) {
			pv := ""
			if va.Spec.Source.PersistentVolumeName != nil {
				pv = *va.Spec.Source.PersistentVolumeName
			}
			return []interface{}{
				va.Name, va.Spec.Attacher, pv, va.Spec.NodeName, va.Status.Attached,
				since(va.CreationTimestamp, now),
			}, nil
		}),
	}
}
