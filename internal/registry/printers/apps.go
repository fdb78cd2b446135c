package printers

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	appsv1beta1 "k8s.io/api/apps/v1beta1"
	corev1 "k8s.io/api/core/v1"
	extensionsv1beta1 "k8s.io/api/extensions/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Upstream keeps taking several workload descriptions from the older
// extensions/v1beta1 and apps/v1beta1 docs; so do we, for identical text.

func statefulSetPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Ready", "string", "Number of the pod with ready state"),
			ageColumn(),
			wideCol("Containers", "string", containersDoc),
			wideCol("Images", "string", imagesDoc),
		},
		Row: rowOf(func(ss *appsv1.StatefulSet, now time.Time) ([]interface{}, error) {
			names, images := containerCells(ss.Spec.Template.Spec.Containers)
			return []interface{}{
				ss.Name,
				fmt.Sprintf("%d/%d", ss.Status.ReadyReplicas, derefInt32(ss.Spec.Replicas, 1)),
				since(ss.CreationTimestamp, now), names, images,
			}, nil
		}),
	}
}

func daemonSetPrinter() Printer {
	status := extensionsv1beta1.DaemonSetStatus{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Desired", "integer", status["desiredNumberScheduled"]),
			col("Current", "integer", status["currentNumberScheduled"]),
			col("Ready", "integer", status["numberReady"]),
			col("Up-to-date", "integer", status["updatedNumberScheduled"]),
			col("Available", "integer", status["numberAvailable"]),
			col("Node Selector", "string", corev1.PodSpec{}.SwaggerDoc()["nodeSelector"]),
			ageColumn(),
			wideCol("Containers", "string", containersDoc),
			wideCol("Images", "string", imagesDoc),
			wideCol("Selector", "string", extensionsv1beta1.DaemonSetSpec{}.SwaggerDoc()["selector"]),
		},
		Row: rowOf(func(ds *appsv1.DaemonSet, now time.Time) ([]interface{}, error) {
			st := ds.Status
			names, images := containerCells(ds.Spec.Template.Spec.Containers)
			return []interface{}{
				ds.Name, int64(st.DesiredNumberScheduled), int64(st.CurrentNumberScheduled),
				int64(st.NumberReady), int64(st.UpdatedNumberScheduled), int64(st.NumberAvailable),
				labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector), since(ds.CreationTimestamp, now),
				names, images, metav1.FormatLabelSelector(ds.Spec.Selector),
			}, nil
		}),
	}
}

func replicaSetPrinter() Printer {
	spec := extensionsv1beta1.ReplicaSetSpec{}.SwaggerDoc()
	status := extensionsv1beta1.ReplicaSetStatus{}.SwaggerDoc()
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
		Row: rowOf(func(rs *appsv1.ReplicaSet, now time.Time) ([]interface{}, error) {
			names, images := containerCells(rs.Spec.Template.Spec.Containers)
			return []interface{}{
				rs.Name, int64(derefInt32(rs.Spec.Replicas, 1)), int64(rs.Status.Replicas),
				int64(rs.Status.ReadyReplicas), since(rs.CreationTimestamp, now),
				names, images, metav1.FormatLabelSelector(rs.Spec.Selector),
			}, nil
		}),
	}
}

func deploymentPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Ready", "string", "Number of the pod with ready state"),
			col("Up-to-date", "string", extensionsv1beta1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]),
			col("Available", "string", extensionsv1beta1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]),
			ageColumn(),
			wideCol("Containers", "string", containersDoc),
			wideCol("Images", "string", imagesDoc),
			wideCol("Selector", "string", extensionsv1beta1.DeploymentSpec{}.SwaggerDoc()["selector"]),
		},
		Row: rowOf(func(d *appsv1.Deployment, now time.Time) ([]interface{}, error) {
			selector := "<invalid>"
			if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil {
				selector = s.String()
			}
			names, images := containerCells(d.Spec.Template.Spec.Containers)
			return []interface{}{
				d.Name,
				fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, derefInt32(d.Spec.Replicas, 1)),
				int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas),
				since(d.CreationTimestamp, now), names, images, selector,
			}, nil
		}),
	}
}

func controllerRevisionPrinter() Printer {
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Controller", "string", "Controller of the object"),
			col("Revision", "string", appsv1beta1.ControllerRevision{}.SwaggerDoc()["revision"]),
			ageColumn(),
		},
		Row: rowOf(func(cr *appsv1.ControllerRevision, now time.Time) ([]interface{}, error) {
			controller := "<none>"
			if ref := metav1.GetControllerOf(cr); ref != nil {
				gv, err := schema.ParseGroupVersion(ref.APIVersion)
				if err != nil {
					return nil, err
				}
				gk := schema.GroupKind{Group: gv.Group, Kind: ref.Kind}
				controller = ref.Name
				if !gk.Empty() {
					// e.g. "statefulset.apps/web"
					controller = strings.ToLower(gk.String()) + "/" + ref.Name
				}
			}
			return []interface{}{cr.Name, controller, cr.Revision, since(cr.CreationTimestamp, now)}, nil
		}),
	}
}
