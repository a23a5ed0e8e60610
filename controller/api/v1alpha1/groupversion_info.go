// Package v1alpha1 holds the CustomAutoscaler API
// (autoscaler-group.autoscaler/v1alpha1).
// +kubebuilder:object:generate=true
// +groupName=autoscaler-group.autoscaler
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API's group and version.
	GroupVersion = schema.GroupVersion{Group: "autoscaler-group.autoscaler", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion, &CustomAutoscaler{}, &CustomAutoscalerList{})
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
