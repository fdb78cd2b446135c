package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"github.com/kubernetes-csi/csi-test/v5/driver"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// mockDriver is csi-test's gomock driver serving on a real unix socket.
type mockDriver struct {
	identity   *driver.MockIdentityServer
	controller *driver.MockControllerServer
	node       *driver.MockNodeServer
	endpoint   string
}

// startDriver serves fresh mocks at <dir>/<name>.sock until the test ends.
// Unexpected calls fail the test (gomock) and the call then times out.
func startDriver(t *testing.T, dir, name string) *mockDriver {
	t.Helper()
	ctrl := gomock.NewController(t)
	d := &mockDriver{
		identity:   driver.NewMockIdentityServer(ctrl),
		controller: driver.NewMockControllerServer(ctrl),
		node:       driver.NewMockNodeServer(ctrl),
	}
	drv := driver.NewMockCSIDriver(&driver.MockCSIDriverServers{
		Identity:   d.identity,
		Controller: d.controller,
		Node:       d.node,
	})
	sock := filepath.Join(dir, name+".sock")
	if err := drv.StartOnAddress("unix", sock); err != nil {
		t.Fatalf("start mock driver: %v", err)
	}
	t.Cleanup(drv.Stop)
	d.endpoint = "unix://" + sock
	return d
}

// dial connects with short timeouts so that a failed expectation ends the
// call quickly instead of hanging.
func (d *mockDriver) dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts = append([]Option{WithTimeout(5 * time.Second), WithNodeTimeout(5 * time.Second)}, opts...)
	c, err := Dial(ctx, d.endpoint, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// protoEq matches a request by proto.Equal (reflect.DeepEqual, gomock's
// default, compares protobuf internals).
type protoEq struct{ want proto.Message }

func (m protoEq) Matches(x any) bool {
	got, ok := x.(proto.Message)
	return ok && proto.Equal(got, m.want)
}

func (m protoEq) String() string {
	return fmt.Sprintf("is %T{%s}", m.want, prototext.Format(m.want))
}

func eq(m proto.Message) gomock.Matcher { return protoEq{m} }

func nodeCaps(types ...csipb.NodeServiceCapability_RPC_Type) *csipb.NodeGetCapabilitiesResponse {
	resp := &csipb.NodeGetCapabilitiesResponse{}
	for _, typ := range types {
		resp.Capabilities = append(resp.Capabilities, &csipb.NodeServiceCapability{
			Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: typ}},
		})
	}
	return resp
}

func controllerCaps(types ...csipb.ControllerServiceCapability_RPC_Type) *csipb.ControllerGetCapabilitiesResponse {
	resp := &csipb.ControllerGetCapabilitiesResponse{}
	for _, typ := range types {
		resp.Capabilities = append(resp.Capabilities, &csipb.ControllerServiceCapability{
			Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: typ}},
		})
	}
	return resp
}

func mountCap(mode csipb.VolumeCapability_AccessMode_Mode, fsType string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}
