// Package kubescheme is the one runtime.Scheme every Nemesis client of the
// Kubernetes API uses: the built-in types and the CustomAutoscaler.
package kubescheme

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// New returns a scheme that knows the built-in types and the
// CustomAutoscaler.
func New() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building scheme: %w", err)
	}
	return scheme, nil
}
