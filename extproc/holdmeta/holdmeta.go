// Package holdmeta is the contract between the xDS translator and the
// activator: the gRPC metadata Envoy's ext_proc filter sends with each held
// request. It is pure and imports nothing, so both sides can use it without
// pulling in the other.
package holdmeta

import "time"

const (
	// Route carries the route's name (the CustomAutoscaler's namespace/name).
	Route = "x-nemesis-route"
	// Environment carries the route's environment.
	Environment = "x-nemesis-environment"
	// DefaultHoldTimeout applies when neither the route nor the control
	// plane's options set one.
	DefaultHoldTimeout = 120 * time.Second
)
