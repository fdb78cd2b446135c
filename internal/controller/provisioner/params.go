package provisioner

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// StorageClass parameters that the provisioner itself reads, as
// kubernetes-csi/external-provisioner names them (pkg/controller/controller.go).
const (
	paramPrefix       = "csi.storage.k8s.io/"
	paramFSType       = paramPrefix + "fstype"
	paramFSTypeLegacy = "fstype" // deprecated, matched case-insensitively and passed through
)

// secretKind is one of the secrets a class may name.
type secretKind int

const (
	secretProvisioner secretKind = iota
	secretControllerPublish
	secretNodeStage
	secretNodePublish
	secretControllerExpand
	secretNodeExpand
	secretControllerModify
	numSecretKinds
)

// secretKeys are upstream's parameter keys for each secretKind: the
// prefixed ones, and the deprecated unprefixed ones, which are not
// stripped from the driver's parameters.
var secretKeys = [numSecretKinds]struct {
	name, key, deprecated string
}{
	secretProvisioner:       {"Provisioner", "provisioner", "csiProvisioner"},
	secretControllerPublish: {"ControllerPublish", "controller-publish", "csiControllerPublish"},
	secretNodeStage:         {"NodeStage", "node-stage", "csiNodeStage"},
	secretNodePublish:       {"NodePublish", "node-publish", "csiNodePublish"},
	secretControllerExpand:  {"ControllerExpand", "controller-expand", ""},
	secretNodeExpand:        {"NodeExpand", "node-expand", ""},
	secretControllerModify:  {"ControllerModify", "controller-modify", ""},
}

// classParams is a StorageClass's parameters, parsed once per class
// version: what the provisioner uses itself, and what goes to the driver.
type classParams struct {
	fsType string
	// driver are the parameters passed to CreateVolume: everything but
	// the csi.storage.k8s.io/ keys.
	driver map[string]string
	// secrets are the name and namespace templates of each kind (after
	// falling back to csi.storage.k8s.io/secret-name and -namespace);
	// empty when the class names none.
	secrets [numSecretKinds]secretTemplate
}

type secretTemplate struct{ name, namespace string }

// parseClassParams checks a class's parameters the way external-provisioner
// does when it provisions (prepareProvision, removePrefixedParameters,
// verifyAndGetSecretNameAndNamespaceTemplate), with its messages, each of
// which names the parameter at fault.
func parseClassParams(params map[string]string) (*classParams, error) {
	p := &classParams{driver: map[string]string{}}
	fsTypes := 0
	for k, v := range params {
		if strings.ToLower(k) == paramFSTypeLegacy || k == paramFSType {
			p.fsType = v
			fsTypes++
		}
	}
	if fsTypes > 1 {
		return nil, fmt.Errorf("fstype specified in parameters with both \"fstype\" and \"%s\" keys", paramFSType)
	}
	known := map[string]bool{paramFSType: true, paramPrefix + "secret-name": true, paramPrefix + "secret-namespace": true}
	for _, s := range secretKeys {
		known[paramPrefix+s.key+"-secret-name"] = true
		known[paramPrefix+s.key+"-secret-namespace"] = true
	}
	// Sorted, so that a class with several bad keys always reports the same.
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, paramPrefix) {
			p.driver[k] = params[k]
			continue
		}
		if !known[k] {
			return nil, fmt.Errorf("failed to strip CSI Parameters of prefixed keys: found unknown parameter key \"%s\" with reserved namespace %s", k, paramPrefix)
		}
	}
	def, err := secretTemplateFor("Default", paramPrefix+"secret", "", params)
	if err != nil {
		return nil, fmt.Errorf("failed to get default name and namespace template from params: %w", err)
	}
	for kind, s := range secretKeys {
		t, err := secretTemplateFor(s.name, paramPrefix+s.key+"-secret", s.deprecated, params)
		if err != nil {
			return nil, fmt.Errorf("failed to get name and namespace template from params: %w", err)
		}
		if t == (secretTemplate{}) {
			t = def
		}
		p.secrets[kind] = t
	}
	return p, nil
}

// secretTemplateFor reads one kind's "<key>-name"/"<key>-namespace" pair (and
// the deprecated "<deprecated>SecretName"/"SecretNamespace" pair).
func secretTemplateFor(name, key, deprecated string, params map[string]string) (secretTemplate, error) {
	var t secretTemplate
	names, namespaces := 0, 0
	if deprecated != "" {
		if v, ok := params[deprecated+"SecretName"]; ok {
			t.name, names = v, names+1
		}
		if v, ok := params[deprecated+"SecretNamespace"]; ok {
			t.namespace, namespaces = v, namespaces+1
		}
	}
	if v, ok := params[key+"-name"]; ok {
		t.name, names = v, names+1
	}
	if v, ok := params[key+"-namespace"]; ok {
		t.namespace, namespaces = v, namespaces+1
	}
	switch {
	case names > 1 || namespaces > 1:
		return t, fmt.Errorf("%s secrets specified in parameters with both \"csi\" and \"%s\" keys", name, paramPrefix)
	case names != namespaces:
		return t, fmt.Errorf("either name and namespace for %s secrets specified, Both must be specified", name)
	case names == 1 && (t.name == "" || t.namespace == ""):
		return t, fmt.Errorf("%s secrets specified in parameters but value of either namespace or name is empty", name)
	}
	return t, nil
}

// resolve turns a template into a SecretReference for one claim, with
// upstream's tokens: ${pv.name} and ${pvc.namespace} in both, and
// ${pvc.name} and ${pvc.annotations['KEY']} in the name only (those are the
// claim owner's to choose, so they never pick the namespace). nil when the
// class names no secret of this kind.
func (t secretTemplate) resolve(pvName string, claim *corev1.PersistentVolumeClaim) (*corev1.SecretReference, error) {
	if t == (secretTemplate{}) {
		return nil, nil
	}
	nsParams := map[string]string{"pv.name": pvName, "pvc.namespace": claim.Namespace}
	ns, err := resolveTemplate(t.namespace, nsParams)
	if err != nil {
		return nil, err
	}
	if len(validation.IsDNS1123Label(ns)) > 0 {
		if ns != t.namespace {
			return nil, fmt.Errorf("%q resolved to %q which is not a valid namespace name", t.namespace, ns)
		}
		return nil, fmt.Errorf("%q is not a valid namespace name", t.namespace)
	}
	nameParams := map[string]string{"pv.name": pvName, "pvc.name": claim.Name, "pvc.namespace": claim.Namespace}
	for k, v := range claim.Annotations {
		nameParams["pvc.annotations['"+k+"']"] = v
	}
	name, err := resolveTemplate(t.name, nameParams)
	if err != nil {
		return nil, err
	}
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		if name != t.name {
			return nil, fmt.Errorf("%q resolved to %q which is not a valid secret name", t.name, name)
		}
		return nil, fmt.Errorf("%q is not a valid secret name", t.name)
	}
	return &corev1.SecretReference{Name: name, Namespace: ns}, nil
}

func resolveTemplate(template string, params map[string]string) (string, error) {
	var missing []string
	out := os.Expand(template, func(k string) string {
		v, ok := params[k]
		if !ok {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		sort.Strings(missing)
		return "", fmt.Errorf("error resolving value %q: invalid tokens: %q", template, missing)
	}
	return out, nil
}

// readSecret returns a secret's data as the CSI secrets map.
func readSecret(ctx context.Context, client kubernetes.Interface, ref *secretRef) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	s, err := client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("error getting secret %s in namespace %s: %v", ref.Name, ref.Namespace, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}
