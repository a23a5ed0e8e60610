package kubesource

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// +kubebuilder:rbac:groups=autoscaler-group.autoscaler,resources=customautoscalers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// Source watches the objects routes come from and reports every change.
type Source struct {
	log    *slog.Logger
	cache  cache.Cache
	update func(map[string][]ir.Route)
}

// New returns a source on the API server of cfg; update receives the routes
// of all environments after every change.
func New(cfg *rest.Config, scheme *runtime.Scheme, log *slog.Logger, update func(map[string][]ir.Route)) (*Source, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes cache: %w", err)
	}
	return &Source{log: log, cache: c, update: update}, nil
}

// Run watches until ctx ends. Each watch event wakes one rebuild; events
// that arrive during a rebuild coalesce into the next.
func (s *Source) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(wake) },
		UpdateFunc: func(any, any) { poke(wake) },
		DeleteFunc: func(any) { poke(wake) },
	}
	for _, obj := range []client.Object{&v1alpha1.CustomAutoscaler{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.cache.Start(ctx) }()
	if !s.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("kubernetes cache did not sync: %w", ctx.Err())
	}
	s.log.Info("kubernetes watches synced")
	poke(wake)
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return fmt.Errorf("kubernetes cache stopped: %w", err)
		case <-wake:
			if err := s.rebuild(ctx); err != nil {
				s.log.Error("building routes", "err", err)
			}
		}
	}
}

func (s *Source) rebuild(ctx context.Context) error {
	var cas v1alpha1.CustomAutoscalerList
	var svcs corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	for _, list := range []client.ObjectList{&cas, &svcs, &slices} {
		if err := s.cache.List(ctx, list); err != nil {
			return fmt.Errorf("listing %T: %w", list, err)
		}
	}
	routes, problems := Routes(Objects{Autoscalers: cas.Items, Services: svcs.Items, Slices: slices.Items})
	for _, p := range problems {
		s.log.Warn("route has no endpoints", "customautoscaler", p.Autoscaler, "reason", p.Message)
	}
	s.update(routes)
	return nil
}

func poke(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
