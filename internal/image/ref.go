package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

// idPattern matches an image ID as Docker prints it, with or without the
// algorithm: "sha256:<64 hex>" or "<64 hex>".
var idPattern = regexp.MustCompile(`^(sha256:)?([0-9a-f]{64})$`)

// Normalize returns ref in the canonical form Docker uses:
//
//	nginx                      -> docker.io/library/nginx:latest
//	library/nginx              -> docker.io/library/nginx:latest
//	docker.io/nginx:1.25       -> docker.io/library/nginx:1.25
//	localhost:5000/x           -> localhost:5000/x:latest
//	nginx@sha256:<hex>         -> docker.io/library/nginx@sha256:<hex>
//	nginx:1.25@sha256:<hex>    -> docker.io/library/nginx@sha256:<hex> (the digest wins)
//
// An image ID ("sha256:<hex>" or the bare 64 hex digits) names an image
// rather than a repository; it is returned as "sha256:<hex>".
func Normalize(ref string) (string, error) {
	if m := idPattern.FindStringSubmatch(ref); m != nil {
		return "sha256:" + m[2], nil
	}
	if strings.TrimSpace(ref) == "" {
		return "", fmt.Errorf("invalid image reference: empty")
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if d, ok := named.(reference.Digested); ok {
		c, err := reference.WithDigest(reference.TrimNamed(named), d.Digest())
		if err != nil {
			return "", fmt.Errorf("invalid image reference %q: %w", ref, err)
		}
		return c.String(), nil
	}
	return reference.TagNameOnly(named).String(), nil
}

// parsedRef is a normalized reference split into the parts lookups need.
type parsedRef struct {
	full   string // the normalized form
	id     string // set when the reference is an image ID
	repo   string // "docker.io/library/nginx"; empty for IDs
	digest string // "sha256:..." when the reference is name@digest
}

func parseRef(ref string) (parsedRef, error) {
	full, err := Normalize(ref)
	if err != nil {
		return parsedRef{}, err
	}
	if idPattern.MatchString(full) {
		return parsedRef{full: full, id: full}, nil
	}
	p := parsedRef{full: full}
	if repo, dgst, ok := strings.Cut(full, "@"); ok {
		p.repo, p.digest = repo, dgst
		return p, nil
	}
	p.repo = repoOf(full)
	return p, nil
}

// repoOf returns the repository part of a normalized reference: the name
// without its tag or digest. The tag separator is the last colon after the
// last slash (a registry host may carry a port).
func repoOf(full string) string {
	if repo, _, ok := strings.Cut(full, "@"); ok {
		return repo
	}
	slash := strings.LastIndex(full, "/")
	if colon := strings.LastIndex(full, ":"); colon > slash {
		return full[:colon]
	}
	return full
}
