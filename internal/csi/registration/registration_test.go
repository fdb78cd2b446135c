package registration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Info{Type: "CSIPlugin", Name: "d.example.com", Endpoint: "/run/d.sock", Versions: []string{"1.0.0"}}
	for _, tc := range []struct {
		name string
		edit func(*Info)
		want string // "" = valid
	}{
		{"valid", func(*Info) {}, ""},
		{"several versions", func(in *Info) { in.Versions = []string{"0.3.0", "1.2.0", "2.0.0"} }, ""},
		{"device plugin", func(in *Info) { in.Type = "DevicePlugin" }, `plugin type "DevicePlugin" is not supported`},
		{"no name", func(in *Info) { in.Name = "" }, "empty name"},
		{"no endpoint", func(in *Info) { in.Endpoint = "" }, `CSI driver "d.example.com" failed. Plugin returned an empty endpoint`},
		{"no versions", func(in *Info) { in.Versions = nil }, `kubernetes.io/csi: ValidatePlugin for CSI driver "d.example.com" failed. Plugin returned an empty list for supported versions`},
		{"only 2.x", func(in *Info) { in.Versions = []string{"2.0.0"} }, `failed. None of the versions specified ["2.0.0"] are supported.`},
		{"only 0.x", func(in *Info) { in.Versions = []string{"0.3.0"} }, `must be v1.x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := ok
			tc.edit(&in)
			_, err := in.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// The node's side and the driver's side of the protocol, on a real socket:
// GetInfo, then the status, which the registrar records; the socket goes
// when the registrar stops.
func TestServeAndDial(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Registrar, 1)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, dir, Info{Name: "d.example.com", Endpoint: "/run/d.sock"}, nil, func(r *Registrar) { ready <- r })
	}()
	var r *Registrar
	select {
	case r = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "d.example.com-reg.sock")
	p, err := Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.Type != "CSIPlugin" || in.Name != "d.example.com" || in.Endpoint != "/run/d.sock" || strings.Join(in.Versions, ",") != "1.0.0" {
		t.Errorf("Info = %+v", in)
	}
	_, _, next := r.Status()
	if err := p.Notify(ctx, errors.New("no room")); err != nil {
		t.Fatal(err)
	}
	<-next
	if ok, msg, next := r.Status(); ok || msg != "no room" {
		t.Errorf("status = %v %q", ok, msg)
	} else {
		if err := p.Notify(ctx, nil); err != nil {
			t.Fatal(err)
		}
		<-next
	}
	if ok, msg, _ := r.Status(); !ok || msg != "" {
		t.Errorf("status = %v %q, want registered", ok, msg)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve: %v", err)
	}
}

func TestServeRefusesBadInfo(t *testing.T) {
	err := Serve(context.Background(), t.TempDir(), Info{Name: "d.example.com", Endpoint: "/x", Versions: []string{"3.0.0"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "None of the versions") {
		t.Errorf("Serve = %v", err)
	}
}
