// Package migration is CSI migration as upstream does it: PersistentVolumes
// of the in-tree types that upstream moved to their vendors' CSI drivers
// (awsElasticBlockStore, gcePersistentDisk, azureDisk, azureFile, cinder,
// vsphereVolume, portworxVolume) are seen, wherever CSI handles them (the
// attach/detach controller, the attacher, the node's volume manager), as
// the CSI volumes upstream's own rules (k8s.io/csi-translation-lib)
// translate them to.
package migration

import (
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	csitranslation "k8s.io/csi-translation-lib"
)

var translator = csitranslation.New()

// Translator is upstream's translation library, for the callers that need
// more of it than AsCSI (inline volumes, provisioner names).
func Translator() csitranslation.CSITranslator { return translator }

// AsCSI is pv as CSI sees it: pv itself when it is a CSI volume or not of
// a migrated type (ok false for the latter), else its translation (a
// copy; pv is not changed).
func AsCSI(pv *corev1.PersistentVolume) (_ *corev1.PersistentVolume, ok bool, err error) {
	if pv.Spec.CSI != nil {
		return pv, true, nil
	}
	if !translator.IsPVMigratable(pv) {
		return pv, false, nil
	}
	csiPV, err := translator.TranslateInTreePVToCSI(logr.Discard(), pv.DeepCopy())
	if err != nil {
		return nil, false, fmt.Errorf("translating in-tree PersistentVolume %q to CSI: %w", pv.Name, err)
	}
	if csiPV.Spec.CSI == nil {
		return nil, false, fmt.Errorf("in-tree PersistentVolume %q did not translate to a CSI volume", pv.Name)
	}
	return csiPV, true, nil
}
