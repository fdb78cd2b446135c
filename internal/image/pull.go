package image

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Registry connections give up quickly: a node that cannot reach a registry
// should say so at once, and the agent retries with its own back-off
// (ImagePullBackOff) rather than hiding the failure in ours.
const (
	dialTimeout           = 5 * time.Second
	tlsHandshakeTimeout   = 10 * time.Second
	responseHeaderTimeout = 30 * time.Second
)

// Pull fetches ref (a tag or name@digest) from its registry, anonymously,
// picks the linux image for this node's architecture, and stores it like
// Import. A registry that cannot be reached fails the pull at once with an
// error saying so; ctx bounds the whole pull.
func (s *Store) Pull(ctx context.Context, ref string) (Image, error) {
	p, err := parseRef(ref)
	if err != nil {
		return Image{}, err
	}
	if p.id != "" {
		return Image{}, fmt.Errorf("pull %s: an image ID cannot be pulled; name the image as name:tag or name@digest", p.full)
	}
	nref, err := name.ParseReference(p.full)
	if err != nil { // it refuses some names Docker takes, e.g. one-letter repositories
		return Image{}, fmt.Errorf("pull %q: the registry client cannot use this name (%w); import the image instead", p.full, err)
	}
	registry := nref.Context().RegistryStr()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(authn.Anonymous),
		remote.WithTransport(s.transport),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	}
	desc, err := remote.Get(nref, opts...)
	if err != nil {
		return Image{}, pullError(p.full, registry, err)
	}
	img, err := desc.Image()
	if err != nil {
		return Image{}, pullError(p.full, registry, err)
	}
	digests := []string{desc.Digest.String()}
	if d, err := img.Digest(); err == nil && d != desc.Digest {
		digests = append(digests, d.String())
	}
	src, err := sourceFromImage(img, []string{p.full}, digests)
	if err != nil {
		return Image{}, pullError(p.full, registry, err)
	}
	w, err := s.newWork("pull-")
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", p.full, err)
	}
	defer w.remove()
	imgs, err := s.storeImages(w, []*source{src})
	if err != nil {
		return Image{}, pullError(p.full, registry, err)
	}
	return imgs[0], nil
}

// pullError says what went wrong in terms of what to do about it.
func pullError(ref, registry string, err error) error {
	var unreachable *unreachableError
	var terr *transport.Error
	switch {
	case errors.As(err, &unreachable):
		return fmt.Errorf("pull %q: %w; import the image with \"moorage image import FILE\" instead", ref, unreachable)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return fmt.Errorf("pull %q from %s: gave up: %w", ref, registry, err)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("pull %q: %s refuses anonymous access (%w); private images are not supported: import it with \"moorage image import FILE\"", ref, registry, err)
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return fmt.Errorf("pull %q: %s does not have it: %w", ref, registry, err)
	}
	return fmt.Errorf("pull %q from %s: %w", ref, registry, err)
}

// unreachableError is a failed connection to a registry. It deliberately
// has no Temporary method, so go-containerregistry does not retry it.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach registry %s from this node: %v", e.addr, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

func newRegistryTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil && ctx.Err() == nil {
				return nil, &unreachableError{addr: addr, err: err}
			}
			return conn, err
		},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
}
