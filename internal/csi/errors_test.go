package csi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/golang/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
)

// wantKind is the classification table of Classify's doc, per code, for
// every operation except CreateVolume (which differs only for
// RESOURCE_EXHAUSTED).
var wantKind = map[codes.Code]Kind{
	codes.OK:                 OK,
	codes.Canceled:           InProgress,
	codes.Unknown:            Transient,
	codes.InvalidArgument:    Final,
	codes.DeadlineExceeded:   InProgress,
	codes.NotFound:           Final,
	codes.AlreadyExists:      Final,
	codes.PermissionDenied:   Final,
	codes.ResourceExhausted:  InProgress,
	codes.FailedPrecondition: Final,
	codes.Aborted:            InProgress,
	codes.OutOfRange:         Final,
	codes.Unimplemented:      Final,
	codes.Internal:           Transient,
	codes.Unavailable:        InProgress,
	codes.DataLoss:           Transient,
	codes.Unauthenticated:    Final,
}

func TestClassifyEveryCode(t *testing.T) {
	if len(wantKind) != 17 {
		t.Fatalf("table covers %d codes, want all 17", len(wantKind))
	}
	for code, want := range wantKind {
		for _, op := range []Op{OpNodeStageVolume, OpControllerPublishVolume, OpDeleteVolume, OpCreateVolume} {
			w := want
			if op == OpCreateVolume && code == codes.ResourceExhausted {
				w = Reschedule
			}
			var err error = &Error{Op: op, VolumeID: "v", Err: status.Error(code, "x")}
			if code == codes.OK {
				err = nil
			}
			if got := Classify(err); got != w {
				t.Errorf("Classify(%s from %s) = %s, want %s", code, op, got, w)
			}
			// Wrapping by callers does not change the answer.
			if err != nil {
				if got := Classify(fmt.Errorf("provision pvc-1: %w", err)); got != w {
					t.Errorf("Classify(wrapped %s from %s) = %s, want %s", code, op, got, w)
				}
			}
		}
	}
}

func TestClassifyLocalErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{&Error{Op: OpNodePublishVolume, Err: ErrNotStaged}, Final},
		{&Error{Op: OpNodeUnstageVolume, Err: ErrStillPublished}, Final},
		{&Error{Op: OpCreateVolume, Err: fmt.Errorf("%w: missing name", ErrInvalidRequest)}, Final},
		{&Error{Op: OpCreateVolume, Err: fmt.Errorf("%w: no volume ID", ErrInvalidResponse)}, InProgress},
		// No gRPC status: be on the safe side, as upstream.
		{errors.New("something broke"), InProgress},
		{context.DeadlineExceeded, InProgress},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// TestClassifyOverSocket sends every non-OK code through a real driver
// socket and classifies what the Client returns. The messages lie on
// purpose: only the code may count.
func TestClassifyOverSocket(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	ctx := context.Background()
	d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(controllerCaps(), nil).AnyTimes()
	var order []*gomock.Call
	for code := codes.Canceled; code <= codes.Unauthenticated; code++ {
		misleading := status.Error(code, "deadline exceeded; unavailable; retry later; not found")
		order = append(order,
			d.controller.EXPECT().ControllerPublishVolume(gomock.Any(), gomock.Any()).Return(nil, misleading),
			d.controller.EXPECT().CreateVolume(gomock.Any(), gomock.Any()).Return(nil, misleading))
	}
	gomock.InOrder(order...)
	c := d.dial(t)

	for code := codes.Canceled; code <= codes.Unauthenticated; code++ {
		_, err := c.ControllerPublish(ctx, ControllerPublishRequest{
			VolumeID: "vol-1", NodeID: "node-1",
			Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}},
		})
		if status.Code(err) != code {
			t.Fatalf("ControllerPublish: code %s, want %s (err %v)", status.Code(err), code, err)
		}
		if got := Classify(err); got != wantKind[code] {
			t.Errorf("ControllerPublish %s: Classify = %s, want %s", code, got, wantKind[code])
		}
		var e *Error
		if !errors.As(err, &e) || e.Op != OpControllerPublishVolume || e.VolumeID != "vol-1" {
			t.Errorf("ControllerPublish error %#v lacks Op/VolumeID", err)
		}

		_, err = c.CreateVolume(ctx, CreateVolumeRequest{
			Name:       "pvc-1",
			Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}},
		})
		want := wantKind[code]
		if code == codes.ResourceExhausted {
			want = Reschedule
		}
		if got := Classify(err); got != want {
			t.Errorf("CreateVolume %s: Classify = %s, want %s", code, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, s := range map[Kind]string{OK: "OK", Final: "Final", Transient: "Transient", InProgress: "InProgress", Reschedule: "Reschedule", Kind(9): "Kind(9)"} {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), s)
		}
	}
}
