// Package ir is the translator's intermediate representation: one
// environment's settings, routes and endpoints, built from PostgreSQL rows
// (xds/settingsdb) and Kubernetes objects (xds/kubesource), checked by
// Validate and turned into Envoy resources by xds/translate. It is pure.
package ir

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/nemesis-ml/nemesis/internal/validation"
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

// Dropped is a route Normalize left out, and why.
type Dropped struct {
	Route  Route
	Reason error
}

// Normalize sorts routes so the most specific prefix matches first and the
// output is stable, and drops the routes that are invalid or whose prefix an
// earlier route (by name) already claimed, returning them so they can be
// reported. What it keeps passes Validate.
func (e *Environment) Normalize() (dropped []Dropped) {
	slices.SortFunc(e.Routes, func(a, b Route) int { return cmp.Compare(a.Name, b.Name) })
	owner := map[string]string{}
	kept := e.Routes[:0]
	for _, r := range e.Routes {
		if err := r.Validate(); err != nil {
			dropped = append(dropped, Dropped{Route: r, Reason: err})
			continue
		}
		if name, taken := owner[r.PathPrefix]; taken {
			dropped = append(dropped, Dropped{Route: r, Reason: fmt.Errorf("path prefix %s is taken by %s", r.PathPrefix, name)})
			continue
		}
		owner[r.PathPrefix] = r.Name
		slices.SortFunc(r.Endpoints, func(a, b Endpoint) int {
			return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
		})
		kept = append(kept, r)
	}
	slices.SortStableFunc(kept, func(a, b Route) int { return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)) })
	e.Routes = kept
	return dropped
}

// Validate checks what the translator relies on: a valid environment name
// and settings, and routes that each pass Route.Validate with no path prefix
// claimed twice.
func (e Environment) Validate() error {
	if err := settings.ValidEnvironment(e.Name); err != nil {
		return err
	}
	if e.Settings.Environment != e.Name {
		return validation.Errorf("settings.environment", "is %q, not the environment's name %q", e.Settings.Environment, e.Name)
	}
	if err := e.Settings.Validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, r := range e.Routes {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		if seen[r.PathPrefix] {
			return validation.Errorf(fmt.Sprintf("routes[%d].pathPrefix", i), "%s is claimed by an earlier route", r.PathPrefix)
		}
		seen[r.PathPrefix] = true
	}
	return nil
}

// Validate checks one route: a namespace/name, a path prefix Envoy can
// match, a hold timeout that is not negative and endpoints with an address
// and a port.
func (r Route) Validate() error {
	if ns, name, ok := strings.Cut(r.Name, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return validation.Errorf("name", "%q is not namespace/name", r.Name)
	}
	if !strings.HasPrefix(r.PathPrefix, "/") || strings.ContainsAny(r.PathPrefix, " \t\r\n?#") {
		return validation.Errorf("pathPrefix", "%q must start with / and hold no whitespace, ? or #", r.PathPrefix)
	}
	if r.HoldTimeoutSeconds < 0 {
		return validation.Errorf("holdTimeoutSeconds", "must not be negative, got %d", r.HoldTimeoutSeconds)
	}
	for i, ep := range r.Endpoints {
		if ep.Address == "" || ep.Port == 0 || ep.Port > 65535 {
			return validation.Errorf(fmt.Sprintf("endpoints[%d]", i), "%s:%d needs an address and a port in 1-65535", ep.Address, ep.Port)
		}
	}
	return nil
}
