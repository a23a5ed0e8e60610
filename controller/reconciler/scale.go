package reconciler

import (
	"context"
	"fmt"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// target is the scale target as an unstructured object, so that any kind
// with a scale subresource works: Deployments, StatefulSets, custom ones.
func target(ca *v1alpha1.CustomAutoscaler) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(ca.Spec.ScaleTargetRef.APIVersion)
	u.SetKind(ca.Spec.ScaleTargetRef.Kind)
	u.SetNamespace(ca.Namespace)
	u.SetName(ca.Spec.ScaleTargetRef.Name)
	return u
}

func getScale(ctx context.Context, c client.Client, ca *v1alpha1.CustomAutoscaler) (*autoscalingv1.Scale, error) {
	u := &unstructured.Unstructured{}
	if err := c.SubResource("scale").Get(ctx, target(ca), u); err != nil {
		return nil, fmt.Errorf("getting scale of %s %s: %w", ca.Spec.ScaleTargetRef.Kind, ca.Spec.ScaleTargetRef.Name, err)
	}
	scale := &autoscalingv1.Scale{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, scale); err != nil {
		return nil, fmt.Errorf("decoding scale of %s %s: %w", ca.Spec.ScaleTargetRef.Kind, ca.Spec.ScaleTargetRef.Name, err)
	}
	return scale, nil
}

// updateScale sets the replicas, failing with a conflict when the scale
// changed since it was read.
func updateScale(ctx context.Context, c client.Client, ca *v1alpha1.CustomAutoscaler, scale *autoscalingv1.Scale, replicas int32) error {
	next := scale.DeepCopy()
	next.Spec.Replicas = replicas
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(next)
	if err != nil {
		return fmt.Errorf("encoding scale: %w", err)
	}
	body := &unstructured.Unstructured{Object: obj}
	body.SetAPIVersion("autoscaling/v1")
	body.SetKind("Scale")
	if err := c.SubResource("scale").Update(ctx, target(ca), client.WithSubResourceBody(body)); err != nil {
		return fmt.Errorf("scaling %s %s to %d: %w", ca.Spec.ScaleTargetRef.Kind, ca.Spec.ScaleTargetRef.Name, replicas, err)
	}
	return nil
}
