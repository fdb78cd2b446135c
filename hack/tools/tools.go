//go:build tools

// Package tools pins modules that the CSI work (issue 5) is about to use,
// so that go.mod and go.sum hold them before the code that imports them.
package tools

import (
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/kubernetes-csi/csi-test/v5/driver"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "google.golang.org/grpc"
	_ "k8s.io/csi-translation-lib"
)
