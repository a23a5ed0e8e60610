package reconciler

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// Reasons of the RouteAccepted condition.
const (
	ReasonRouteAccepted   = "Accepted"
	ReasonPathPrefixTaken = "PathPrefixTaken"
	ReasonInvalidRoute    = "InvalidRoute"
)

// routeAccepted sets RouteAccepted: whether Envoy serves the autoscaler's
// route, decided as the control plane decides (ir.Environment.Normalize
// over every route of the environment: of two routes claiming the same
// traffic, the older keeps it). A route that lost gets a Warning event once.
func (r *Reconciler) routeAccepted(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus) error {
	if ca.Spec.Route == nil {
		meta.RemoveStatusCondition(&status.Conditions, CondRouteAccepted)
		return nil
	}
	var all v1alpha1.CustomAutoscalerList
	if err := r.client.List(ctx, &all); err != nil {
		return fmt.Errorf("listing autoscalers for route ownership: %w", err)
	}
	env := ir.Environment{Name: routeEnvironment(ca)}
	for i := range all.Items {
		other := &all.Items[i]
		if other.Spec.Route == nil || !other.DeletionTimestamp.IsZero() || routeEnvironment(other) != env.Name {
			continue
		}
		env.Routes = append(env.Routes, ir.Route{
			Name: other.Namespace + "/" + other.Name, PathPrefix: other.Spec.Route.PathPrefix, CreatedAt: other.CreationTimestamp.Time,
		})
	}
	name := ca.Namespace + "/" + ca.Name
	for _, d := range env.Normalize() {
		if d.Route.Name != name {
			continue
		}
		reason := ReasonInvalidRoute
		var taken *ir.TakenError
		if errors.As(d.Reason, &taken) {
			reason = ReasonPathPrefixTaken
		}
		r.warnOnce(ca, CondRouteAccepted, reason, d.Reason.Error())
		set(status, ca.Generation, CondRouteAccepted, false, reason, d.Reason.Error())
		return nil
	}
	set(status, ca.Generation, CondRouteAccepted, true, ReasonRouteAccepted,
		fmt.Sprintf("Envoys of %s route %s to this autoscaler's service", env.Name, ca.Spec.Route.PathPrefix))
	return nil
}

// routeEnvironment is the environment of the autoscaler's route, as
// xds/kubesource names it.
func routeEnvironment(ca *v1alpha1.CustomAutoscaler) string {
	if ca.Spec.Route.Environment == "" {
		return "default"
	}
	return ca.Spec.Route.Environment
}
