package provisioner

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/moorage/moorage/internal/csi"
)

const testDriver = "fake.csi.moorage.io"

// fakeDriver is a small CSI identity and controller service on a real unix
// socket. CreateVolume is idempotent by name and returns IDs that differ
// from names ("vol-N"), as real drivers may; every call is recorded.
type fakeDriver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedControllerServer

	topology    bool  // VOLUME_ACCESSIBILITY_CONSTRAINTS
	getCapacity bool  // GET_CAPACITY
	available   int64 // GetCapacity's answer
	// extra is added to every created volume's size.
	extra int64

	mu       sync.Mutex
	byName   map[string]*csipb.Volume
	nextID   int
	creates  []*csipb.CreateVolumeRequest
	created  []time.Time // when each CreateVolume arrived
	deletes  []*csipb.DeleteVolumeRequest
	capCalls int
	// createErr, when set, answers a CreateVolume before it creates.
	createErr func(n int, req *csipb.CreateVolumeRequest) error
	// lostAnswer, when set, replaces the answer of a CreateVolume that did
	// create (or find) its volume: a timeout after the fact.
	lostAnswer func(n int) error
	// deleteErr, when set, answers a DeleteVolume before it deletes.
	deleteErr func(n int, req *csipb.DeleteVolumeRequest) error
}

// serve starts d on a socket in a temporary directory and returns a client.
func (d *fakeDriver) serve(t *testing.T) *csi.Client {
	t.Helper()
	d.byName = map[string]*csipb.Volume{}
	sock := filepath.Join(t.TempDir(), "csi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterControllerServer(srv, d)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := csi.Dial(ctx, "unix://"+sock, csi.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (d *fakeDriver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: testDriver, VendorVersion: "test"}, nil
}

func (d *fakeDriver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	service := func(t csipb.PluginCapability_Service_Type) *csipb.PluginCapability {
		return &csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: t}}}
	}
	resp := &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{service(csipb.PluginCapability_Service_CONTROLLER_SERVICE)}}
	if d.topology {
		resp.Capabilities = append(resp.Capabilities, service(csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS))
	}
	return resp, nil
}

func (d *fakeDriver) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	return &csipb.ProbeResponse{}, nil
}

func (d *fakeDriver) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	rpc := func(t csipb.ControllerServiceCapability_RPC_Type) *csipb.ControllerServiceCapability {
		return &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}}}
	}
	resp := &csipb.ControllerGetCapabilitiesResponse{Capabilities: []*csipb.ControllerServiceCapability{rpc(csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME)}}
	if d.getCapacity {
		resp.Capabilities = append(resp.Capabilities, rpc(csipb.ControllerServiceCapability_RPC_GET_CAPACITY))
	}
	return resp, nil
}

func (d *fakeDriver) CreateVolume(_ context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.creates = append(d.creates, req)
	d.created = append(d.created, time.Now())
	if d.createErr != nil {
		if err := d.createErr(len(d.creates), req); err != nil {
			return nil, err
		}
	}
	v, ok := d.byName[req.Name]
	if !ok {
		v = d.newVolume(req)
	}
	if d.lostAnswer != nil {
		if err := d.lostAnswer(len(d.creates)); err != nil {
			return nil, err
		}
	}
	return &csipb.CreateVolumeResponse{Volume: v}, nil
}

func (d *fakeDriver) newVolume(req *csipb.CreateVolumeRequest) *csipb.Volume {
	d.nextID++
	v := &csipb.Volume{
		VolumeId:      fmt.Sprintf("vol-%d", d.nextID),
		CapacityBytes: req.GetCapacityRange().GetRequiredBytes() + d.extra,
		VolumeContext: map[string]string{"fake/name": req.Name},
	}
	if ar := req.GetAccessibilityRequirements(); ar != nil {
		if len(ar.Preferred) > 0 {
			v.AccessibleTopology = ar.Preferred[:1]
		} else if len(ar.Requisite) > 0 {
			v.AccessibleTopology = ar.Requisite[:1]
		}
	}
	d.byName[req.Name] = v
	return v
}

func (d *fakeDriver) DeleteVolume(_ context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deletes = append(d.deletes, req)
	if d.deleteErr != nil {
		if err := d.deleteErr(len(d.deletes), req); err != nil {
			return nil, err
		}
	}
	for name, v := range d.byName {
		if v.VolumeId == req.VolumeId {
			delete(d.byName, name)
		}
	}
	return &csipb.DeleteVolumeResponse{}, nil
}

func (d *fakeDriver) GetCapacity(context.Context, *csipb.GetCapacityRequest) (*csipb.GetCapacityResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.capCalls++
	return &csipb.GetCapacityResponse{AvailableCapacity: d.available}, nil
}

func (d *fakeDriver) createRequests() []*csipb.CreateVolumeRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*csipb.CreateVolumeRequest(nil), d.creates...)
}

func (d *fakeDriver) createTimes() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.created...)
}

func (d *fakeDriver) deleteRequests() []*csipb.DeleteVolumeRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*csipb.DeleteVolumeRequest(nil), d.deletes...)
}

// volumes is how many volumes exist on the driver.
func (d *fakeDriver) volumes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byName)
}
