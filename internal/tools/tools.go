//go:build tools

// Package tools pins modules that are about to be used (temporary).
package tools

import (
	_ "github.com/kubernetes-csi/csi-test/v5/driver"
	_ "k8s.io/csi-translation-lib"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)
