package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// RetryOn are the only failures Envoy retries: those where the request
// never reached a model (no connection, a stream the pod refused, a reset
// before the request was sent), so a retry cannot run an inference twice.
// A pod going away during a scale-down fails this way.
const RetryOn = "connect-failure,refused-stream,reset-before-request"

// buildRetryPolicy retries on another host than the ones that failed. Envoy
// buffers a request body for a retry only up to the connection's buffer
// limit (1 MiB); a larger upload streams and is not retried.
func buildRetryPolicy(attempts int) (*routev3.RetryPolicy, error) {
	previous, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		return nil, err
	}
	return &routev3.RetryPolicy{
		RetryOn:    RetryOn,
		NumRetries: wrapperspb.UInt32(uint32(attempts)),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previous},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}, nil
}
