package image

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	cases := []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"library/nginx", "docker.io/library/nginx:latest"},
		{"docker.io/nginx:1.25", "docker.io/library/nginx:1.25"},
		{"index.docker.io/library/nginx:1.25", "docker.io/library/nginx:1.25"},
		{"bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"},
		{"localhost/x", "localhost/x:latest"},
		{"localhost:5000/x", "localhost:5000/x:latest"},
		{"gcr.io/google-samples/cassandra:v13", "gcr.io/google-samples/cassandra:v13"},
		{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"},
		{"nginx@sha256:" + hex, "docker.io/library/nginx@sha256:" + hex},
		{"nginx:1.25@sha256:" + hex, "docker.io/library/nginx@sha256:" + hex},
		{"quay.io/a/b/c@sha256:" + hex, "quay.io/a/b/c@sha256:" + hex},
		{"sha256:" + hex, "sha256:" + hex},
		{hex, "sha256:" + hex},
	}
	for _, c := range cases {
		got, err := Normalize(c.in)
		if err != nil || got != c.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", " ", "Nginx", "nginx:", "nginx@sha256:abc", "-bad", "a b", "nginx:tag:tag", "http://nginx"} {
		got, err := Normalize(bad)
		if err == nil {
			t.Errorf("Normalize(%q) = %q; want an error", bad, got)
		} else if !strings.Contains(err.Error(), "invalid image reference") {
			t.Errorf("Normalize(%q): %v; want it to say the reference is invalid", bad, err)
		}
	}
}

func TestRepoOf(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx:latest":   "docker.io/library/nginx",
		"localhost:5000/x:latest":          "localhost:5000/x",
		"localhost:5000/x@sha256:abcd":     "localhost:5000/x",
		"docker.io/library/nginx@sha256:0": "docker.io/library/nginx",
	} {
		if got := repoOf(in); got != want {
			t.Errorf("repoOf(%q) = %q, want %q", in, got, want)
		}
	}
}
