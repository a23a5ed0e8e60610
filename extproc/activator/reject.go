package activator

import (
	"encoding/json"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Why a request was not let through; the reason label of
// nemesis_activator_rejected_total and the body's "reason".
const (
	reasonTimeout   = "hold_timeout"
	reasonQueueFull = "queue_full"
	// reasonRefused: metadata missing, another environment's, or a route
	// that is not published.
	reasonRefused = "refused"
)

// Retry-After, in seconds: a full queue drains within moments of the model
// being ready; a model that did not start within the hold timeout needs
// longer.
const (
	queueFullRetryAfter = 1
	timeoutRetryAfter   = 10
)

// rejection is the JSON body of a rejected request.
type rejection struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
	Route  string `json:"route"`
}

// reject answers the request itself with 503 instead of letting it through.
func reject(reason, route, msg string, retryAfter int) *extprocv3.ProcessingResponse {
	body, _ := json.Marshal(rejection{Error: msg, Reason: reason, Route: route})
	header := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				header("content-type", "application/json"),
				header("retry-after", strconv.Itoa(retryAfter)),
			}},
			Body:    body,
			Details: "nemesis_activator_" + reason,
		},
	}}
}
