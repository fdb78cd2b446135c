package openapi

import (
	"testing"

	"k8s.io/client-go/kubernetes/scheme"
)

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(scheme.Scheme, testResources); err != nil {
			b.Fatal(err)
		}
	}
}
