package command

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/extproc/activator"
	"github.com/nemesis-ml/nemesis/xds"
)

type activatorFlags struct {
	ActivatorHoldTimeout time.Duration `help:"How long a request to a model at zero is held while it wakes, when its CustomAutoscaler does not set scaleToZero.holdTimeoutSeconds." default:"120s" env:"NEMESIS_ACTIVATOR_HOLD_TIMEOUT"`
	ActivatorMaxHeld     int           `help:"How many requests one route may hold while its model wakes; more get 503 at once." default:"1000" env:"NEMESIS_ACTIVATOR_MAX_HELD"`
}

// newActivator builds the ext_proc activator: it waits on the control
// plane's ACKs and wakes targets by telling this process's controller and
// stamping their CustomAutoscalers; released hears of each wake's release.
func (f activatorFlags) newActivator(ctx context.Context, kube *rest.Config, scheme *runtime.Scheme, cp *xds.ControlPlane, local *activation.Local, released func(activator.Release), reg prometheus.Registerer, log *slog.Logger) (*activator.Activator, error) {
	if f.ActivatorMaxHeld < 1 {
		return nil, fmt.Errorf("--activator-max-held must be at least 1, got %d", f.ActivatorMaxHeld)
	}
	c, err := client.New(kube, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client for the activator: %w", err)
	}
	// The client discovers the CustomAutoscaler's API on first use; do it
	// now rather than in the first wake's path.
	go func() {
		_, _ = c.RESTMapper().RESTMapping(schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "CustomAutoscaler"})
	}()
	return activator.New(ctx, activator.Config{
		MaxHeld: f.ActivatorMaxHeld, Route: cp.Hold, Ready: cp.WaitReady, Wake: activation.Wake(local, activation.New(c)),
		Released: released, Registerer: reg, Log: log,
	}), nil
}
