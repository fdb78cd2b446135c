package volume

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/csi/migration"
)

// CSI migration. Upstream has moved the in-tree cloud volume plugins
// (awsElasticBlockStore, gcePersistentDisk, azureDisk, azureFile, cinder,
// vsphereVolume, portworxVolume) to their vendors' CSI drivers: a volume of
// such a type, as a PersistentVolume or inline in a pod, is translated
// with upstream's own rules (k8s.io/csi-translation-lib) into a CSI
// volume of the vendor's driver and set up through it. Until that driver
// is registered on the node, the pod's FailedMount event says, as the
// kubelet does, that the driver (named: ebs.csi.aws.com, ...) is not among
// the registered CSI drivers. Other in-tree types (rbd, cephfs, iscsi, fc,
// nfs, glusterfs, flocker, flexVolume, ...) have no translation; they are
// refused with a message (see setUpClaim and setUpVolume).

var translator = migration.Translator()

// migratedPV is the CSI form of an in-tree PersistentVolume whose plugin
// upstream migrated to CSI, or nil if it is not one.
func migratedPV(pv *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	csiPV, ok, err := migration.AsCSI(pv)
	if err != nil || !ok {
		return nil, err
	}
	return csiPV, nil
}

// setUpMigratedInline sets up an inline volume of a migrated in-tree type
// through its CSI driver, as a CSI volume named after the translated
// volume (upstream's inline migration); ok is false for a volume of any
// other type.
func (m *Manager) setUpMigratedInline(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume) (mt Mounted, ok bool, err error) {
	if !translator.IsInlineMigratable(vol) {
		return Mounted{}, false, nil
	}
	pv, err := translator.TranslateInTreeInlineVolumeToCSI(logr.Discard(), vol.DeepCopy(), pod.Namespace)
	if err != nil {
		return Mounted{}, true, &Error{Volume: vol.Name, Err: fmt.Errorf("translating in-tree volume to CSI: %w", err)}
	}
	if pv.Spec.CSI == nil {
		return Mounted{}, true, &Error{Volume: vol.Name, Err: fmt.Errorf("in-tree volume %q did not translate to a CSI volume", vol.Name)}
	}
	readOnly := pv.Spec.CSI.ReadOnly
	mt, err = m.setUpCSI(ctx, pod, vol.Name, pv, readOnly, false)
	return mt, true, err
}
