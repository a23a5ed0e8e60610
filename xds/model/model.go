// Package model is what the xDS translator turns into Envoy resources: one
// environment's settings, routes and endpoints, built from PostgreSQL rows
// and Kubernetes objects.
package model

import (
	"cmp"
	"slices"

	"github.com/nemesis-ml/nemesis/xds/settings"
)

// Environment is everything one Envoy fleet is configured with.
type Environment struct {
	Name     string            `json:"name"`
	Settings settings.Settings `json:"settings"`
	Routes   []Route           `json:"routes"`
}

// Route sends requests under PathPrefix to the ready endpoints of one
// CustomAutoscaler's Service.
type Route struct {
	// Name is the CustomAutoscaler's namespace/name; it names the cluster.
	Name       string     `json:"name"`
	PathPrefix string     `json:"pathPrefix"`
	Endpoints  []Endpoint `json:"endpoints"`
	// HoldTimeoutSeconds is how long the activator holds a request while
	// the route has no endpoint; 0 means the control plane's default.
	HoldTimeoutSeconds int32 `json:"holdTimeoutSeconds,omitempty"`
}

// Endpoint is one ready address of a route's Service.
type Endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
}

// Normalize sorts routes so the most specific prefix matches first and the
// output is stable, and drops routes whose prefix an earlier route (by name)
// already claimed. It returns the dropped routes so they can be reported.
func (e *Environment) Normalize() (dropped []Route) {
	slices.SortFunc(e.Routes, func(a, b Route) int { return cmp.Compare(a.Name, b.Name) })
	seen := map[string]bool{}
	kept := e.Routes[:0]
	for _, r := range e.Routes {
		if seen[r.PathPrefix] {
			dropped = append(dropped, r)
			continue
		}
		seen[r.PathPrefix] = true
		slices.SortFunc(r.Endpoints, func(a, b Endpoint) int {
			return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
		})
		kept = append(kept, r)
	}
	slices.SortStableFunc(kept, func(a, b Route) int { return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)) })
	e.Routes = kept
	return dropped
}
