// Package user is who makes a request of the API server, as upstream's
// user.Info: a name, a UID, groups and extra values, set by authentication
// and read by whatever records the requester (a CertificateSigningRequest's
// spec.username, groups and extra).
package user

import "context"

// Info is an authenticated (or anonymous) requester.
type Info struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Upstream's well-known users and groups.
const (
	// Anonymous is the name of a request without credentials.
	Anonymous = "system:anonymous"
	// AllUnauthenticated is the group of every anonymous request.
	AllUnauthenticated = "system:unauthenticated"
	// AllAuthenticated is the group of every authenticated request.
	AllAuthenticated = "system:authenticated"
	// BootstrapUserPrefix starts the name of a bootstrap token's user:
	// system:bootstrap:TOKEN-ID.
	BootstrapUserPrefix = "system:bootstrap:"
	// BootstrapGroup is the group of every bootstrap token's user.
	BootstrapGroup = "system:bootstrappers"
	// CredentialIDKey is the extra key naming the credential used (a
	// client certificate's fingerprint, a token's ID).
	CredentialIDKey = "authentication.kubernetes.io/credential-id"
)

type contextKey struct{}

// WithUser returns ctx carrying u.
func WithUser(ctx context.Context, u Info) context.Context {
	return context.WithValue(ctx, contextKey{}, u)
}

// From returns the requester ctx carries; ok is false if none.
func From(ctx context.Context) (Info, bool) {
	u, ok := ctx.Value(contextKey{}).(Info)
	return u, ok
}
