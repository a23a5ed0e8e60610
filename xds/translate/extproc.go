package translate

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nemesis-ml/nemesis/extproc/holdmeta"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// The activator contract: Envoy's ext_proc filter, enabled only on routes
// without a ready endpoint, calls the activator with the gRPC metadata of
// extproc/holdmeta.
const (
	// ExtProcFilterName names the activator's filter in the HTTP chain and
	// in routes' typed_per_filter_config.
	ExtProcFilterName = "envoy.filters.http.ext_proc"
	// ControlPlaneCluster is the bootstrap's cluster of `nemesis serve`'s
	// gRPC server, which serves ADS and the activator.
	ControlPlaneCluster = "nemesis-xds"
	// DefaultHoldTimeout applies when neither the route nor the options set one.
	DefaultHoldTimeout = holdmeta.DefaultHoldTimeout
	// messageTimeout is how long Envoy waits for the activator's answer,
	// the most Envoy allows; the activator always answers first, and this
	// only bounds a hung one.
	messageTimeout = time.Hour
	// holdGrace is how much longer than a hold Envoy lets the stream be.
	holdGrace = 10 * time.Second
	// MaxHoldTimeout is the longest hold the activator does (the API allows
	// asking for 3600 s).
	MaxHoldTimeout = messageTimeout - holdGrace
)

// buildExtProcFilter is the activator's filter. It is disabled by default
// (HttpFilter.disabled): a route with ready endpoints does not even create
// it, and a route at zero enables it with its typed_per_filter_config, so
// that moving a model to and from zero changes routes (RDS) only, never the
// listener, whose change would drain client connections.
func buildExtProcFilter() (*hcmv3.HttpFilter, error) {
	cfg, err := anypb.New(&extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ControlPlaneCluster},
		}},
		// Only the request headers go to the activator; the body waits in
		// Envoy, and the answer never passes through it.
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SKIP,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		MessageTimeout:    durationpb.New(messageTimeout),
		MaxMessageTimeout: durationpb.New(messageTimeout),
		// Without the activator a request to a model at zero cannot be
		// served: fail it with 503 rather than send it to no endpoint.
		FailureModeAllow: false,
		StatusOnError:    &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{
		Name:       ExtProcFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg},
		Disabled:   true,
	}, nil
}

// HoldTimeout is how long the activator may hold a request of the route:
// the route's own, else the options', capped at MaxHoldTimeout. The
// activator reads it from the control plane's route table, never from Envoy.
func HoldTimeout(r ir.Route, opts Options) time.Duration {
	switch {
	case r.HoldTimeoutSeconds > 0:
		return min(time.Duration(r.HoldTimeoutSeconds)*time.Second, MaxHoldTimeout)
	case opts.HoldTimeout > 0:
		return min(opts.HoldTimeout, MaxHoldTimeout)
	}
	return DefaultHoldTimeout
}

// extProcPerRoute enables the activator on a route at zero and tells it
// which route and environment a request belongs to.
func extProcPerRoute(env string, r ir.Route) (map[string]*anypb.Any, error) {
	cfg, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
		Overrides: &extprocv3.ExtProcOverrides{GrpcInitialMetadata: []*corev3.HeaderValue{
			{Key: holdmeta.Route, Value: r.Name},
			{Key: holdmeta.Environment, Value: env},
		}},
	}})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{ExtProcFilterName: cfg}, nil
}
