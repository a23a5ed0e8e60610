// Package activation asks the CustomAutoscaler controller to wake a target:
// it stamps the activation annotation on the target's CustomAutoscaler. Any
// `nemesis serve` replica may call it; the elected controller, which watches
// CustomAutoscalers, acts on the stamp (see v1alpha1.AnnotationActivation).
package activation

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// +kubebuilder:rbac:groups=autoscaler-group.autoscaler,resources=customautoscalers,verbs=patch

// Stamper stamps activation annotations.
type Stamper struct {
	client client.Client
}

// New returns a stamper writing through c.
func New(c client.Client) *Stamper { return &Stamper{client: c} }

// Stamp records that requests of the CustomAutoscaler namespace/name are held
// at time at. A merge patch touches nothing else of the object, so stamps of
// several replicas and the controller's own writes never conflict.
func (s *Stamper) Stamp(ctx context.Context, namespace, name string, at time.Time) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{v1alpha1.AnnotationActivation: at.UTC().Format(time.RFC3339Nano)},
	}})
	if err != nil {
		return fmt.Errorf("encoding activation of %s/%s: %w", namespace, name, err)
	}
	ca := &v1alpha1.CustomAutoscaler{}
	ca.Namespace, ca.Name = namespace, name
	if err := s.client.Patch(ctx, ca, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("stamping activation of %s/%s: %w", namespace, name, err)
	}
	return nil
}
