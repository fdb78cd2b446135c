package app

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/moorage/moorage/internal/registry/defaults"
)

// NewScheme returns the scheme of every type the API server reads and writes,
// with upstream's defaulting functions registered.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // static registration: a failure is a programming error
	}
	if err := metav1.AddMetaToScheme(s); err != nil {
		panic(err)
	}
	defaults.RegisterDefaults(s)
	return s
}
