package image

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPullFailsFastWhenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()

	s, _ := openStore(t)
	for _, ref := range []string{closedPort + "/team/app:v1", "registry.invalid/app:v1"} {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := s.Pull(ctx, ref)
		cancel()
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("Pull(%q) took %v", ref, took)
		}
		if err == nil || !strings.Contains(err.Error(), "cannot reach registry") || !strings.Contains(err.Error(), "moorage image import") {
			t.Errorf("Pull(%q) = %v; want it to say the registry cannot be reached and what to do", ref, err)
		}
	}
}

// A registry that accepts connections and never answers: ctx decides.
func TestPullHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s, _ := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Pull(ctx, l.Addr().String()+"/app:v1")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Pull took %v", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up") {
		t.Errorf("Pull = %v", err)
	}
}

func TestPullFromRegistry(t *testing.T) {
	needRoot(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(host + "/team/app:v1")
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	s, _ := openStore(t)
	got, err := s.Pull(context.Background(), host+"/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := img.ConfigName()
	if got.Ref != host+"/team/app:v1" || got.ID != id.String() || len(got.Layers) != 3 || got.Size != 3*1024 {
		t.Fatalf("Pull = %+v", got)
	}
	digest, _ := img.Digest()
	if _, err := s.Get(host + "/team/app@" + digest.String()); err != nil {
		t.Errorf("Get by the pulled manifest digest: %v", err)
	}
	byDigest, err := s.Pull(context.Background(), host+"/team/app@"+digest.String())
	if err != nil || byDigest.ID != got.ID {
		t.Fatalf("Pull by digest = %+v, %v", byDigest, err)
	}
	if _, err := s.Pull(context.Background(), host+"/team/missing:v1"); err == nil || !strings.Contains(err.Error(), "does not have it") {
		t.Errorf("Pull of a missing image = %v", err)
	}
}
