// Package ir is the translator's intermediate representation: one
// environment's settings, routes and endpoints, built from PostgreSQL rows
// (xds/settingsdb) and Kubernetes objects (xds/kubesource), checked by
// Validate and turned into Envoy resources by xds/translate. It is pure.
package ir

import (
	"cmp"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

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
	Name       string `json:"name"`
	PathPrefix string `json:"pathPrefix"`
	// Hosts are the host names (the Host header or gRPC's :authority,
	// without a port) the route answers for; empty means every host.
	Hosts []string `json:"hosts,omitempty"`
	// Headers must all be present with exactly these values.
	Headers []HeaderMatch `json:"headers,omitempty"`
	// Protocol is how Envoy speaks to the endpoints; "" means HTTP/1.1.
	Protocol  Protocol   `json:"protocol,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
	// NoService: the route's Service (or its port) is not known yet, so
	// neither are its protocol and endpoints. Envoy gets the route without
	// its cluster (503, flag NC) and the cluster once the Service is seen,
	// built once with the Service's protocol: a cluster added and then
	// changed at once warms again, which holds back every other cluster
	// update of that Envoy for a while (docs/loadbalancer.md).
	NoService bool `json:"noService,omitempty"`
	// HoldTimeoutSeconds is how long the activator holds a request while
	// the route has no endpoint; 0 means the control plane's default.
	HoldTimeoutSeconds int32 `json:"holdTimeoutSeconds,omitempty"`
	// CreatedAt is when the CustomAutoscaler was created: of two routes
	// claiming the same traffic, the older keeps it.
	CreatedAt time.Time `json:"createdAt,omitzero"`
}

// Namespace is the namespace part of the route's name.
func (r Route) Namespace() string {
	ns, _, _ := strings.Cut(r.Name, "/")
	return ns
}

// HeaderMatch is a request header that must have exactly Value.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Protocol is the protocol Envoy speaks to a route's endpoints.
type Protocol string

const (
	// HTTP1 is HTTP/1.1, one request per connection at a time.
	HTTP1 Protocol = "http1"
	// H2C is HTTP/2 without TLS (prior knowledge), what gRPC needs.
	H2C Protocol = "h2c"
)

// Limits of a route's match.
const (
	MaxHosts       = 16
	MaxHeaders     = 8
	MaxHeaderValue = 256
)

var (
	hostPattern       = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	headerNamePattern = regexp.MustCompile(`^[a-z0-9][-a-z0-9_.]*$`)
)

// Endpoint is one ready address of a route's Service.
type Endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// Pod is the endpoint's pod, namespace/name, when its EndpointSlice
	// names one: serve puts the requests Envoy logs for the address on it.
	Pod string `json:"pod,omitempty"`
}

// HostPort is the endpoint as Envoy logs an upstream host: ip:port.
func (e Endpoint) HostPort() string {
	return net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.Port), 10))
}

// Dropped is a route Normalize left out, and why.
type Dropped struct {
	Route  Route
	Reason error
}

// TakenError says a route lost its path prefix to an older route.
type TakenError struct {
	PathPrefix string
	// Owner is the route that keeps the traffic, namespace/name, and
	// OwnerPrefix its prefix: shorter than PathPrefix when the lost route
	// would have taken part of another namespace's traffic.
	Owner, OwnerPrefix string
}

func (e *TakenError) Error() string {
	if e.OwnerPrefix != e.PathPrefix {
		return fmt.Sprintf("path prefix %s falls under %s, the path prefix of %s in another namespace", e.PathPrefix, e.OwnerPrefix, e.Owner)
	}
	return fmt.Sprintf("path prefix %s is taken by %s", e.PathPrefix, e.Owner)
}

// older orders routes by age: creation time, then name, so that the
// decision is the same in every replica and on every run.
func older(a, b Route) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Name, b.Name))
}

// takenBy returns the error when owner, an older route, keeps r's traffic:
// the same prefix, or, from another namespace, a prefix r's starts with
// (Envoy matches prefixes as strings and the longest wins, so r would take
// the requests under it that owner serves today).
func takenBy(r, owner Route) *TakenError {
	if !sameMatch(r, owner) {
		return nil
	}
	switch {
	case r.PathPrefix == owner.PathPrefix:
		fallthrough
	case r.Namespace() != owner.Namespace() && strings.HasPrefix(r.PathPrefix, owner.PathPrefix):
		return &TakenError{PathPrefix: r.PathPrefix, Owner: owner.Name, OwnerPrefix: owner.PathPrefix}
	}
	return nil
}

// sameMatch tells whether two routes compete for the same requests apart
// from their prefixes: they answer a common host (or both any host) and
// match the same headers. A route with a host or a header is more specific
// than one without and never takes its traffic.
func sameMatch(a, b Route) bool {
	hosts := len(a.Hosts) == 0 && len(b.Hosts) == 0 ||
		slices.ContainsFunc(a.Hosts, func(h string) bool { return slices.Contains(b.Hosts, h) })
	ah, bh := slices.Clone(a.Headers), slices.Clone(b.Headers)
	slices.SortFunc(ah, compareHeaders)
	slices.SortFunc(bh, compareHeaders)
	return hosts && slices.Equal(ah, bh)
}

// Normalize sorts routes so the most specific prefix matches first and the
// output is stable, and drops the routes that are invalid or whose traffic
// an older route keeps (TakenError: the same prefix, or a longer prefix
// under another namespace's), returning them so they can be reported. What
// it keeps passes Validate. It decides by creation time, then name, so a new
// CustomAutoscaler can never capture an existing route's traffic.
func (e *Environment) Normalize() (dropped []Dropped) {
	slices.SortFunc(e.Routes, older)
	kept := e.Routes[:0]
routes:
	for _, r := range e.Routes {
		if err := r.Validate(); err != nil {
			dropped = append(dropped, Dropped{Route: r, Reason: err})
			continue
		}
		for _, owner := range kept {
			if err := takenBy(r, owner); err != nil {
				dropped = append(dropped, Dropped{Route: r, Reason: err})
				continue routes
			}
		}
		slices.SortFunc(r.Endpoints, func(a, b Endpoint) int {
			return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
		})
		slices.Sort(r.Hosts)
		slices.SortFunc(r.Headers, compareHeaders)
		kept = append(kept, r)
	}
	slices.SortStableFunc(kept, func(a, b Route) int {
		// Longer prefixes first, then more headers: Envoy takes the first
		// route that matches.
		return cmp.Or(cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)), cmp.Compare(len(b.Headers), len(a.Headers)), cmp.Compare(a.Name, b.Name))
	})
	e.Routes = kept
	return dropped
}

// MatchKeys are the matches a route claims, one per host it answers for
// ("*" when any): two routes that share a key would take the same
// requests, so only one may have it.
func (r Route) MatchKeys() []string {
	headers := slices.Clone(r.Headers)
	slices.SortFunc(headers, compareHeaders)
	var match strings.Builder
	fmt.Fprintf(&match, "path prefix %s", r.PathPrefix)
	for _, h := range headers {
		fmt.Fprintf(&match, ", header %s=%q", h.Name, h.Value)
	}
	hosts := r.Hosts
	if len(hosts) == 0 {
		hosts = []string{"*"}
	}
	keys := make([]string, 0, len(hosts))
	for _, h := range hosts {
		keys = append(keys, "host "+h+", "+match.String())
	}
	return keys
}

func compareHeaders(a, b HeaderMatch) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Value, b.Value))
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
		for _, k := range r.MatchKeys() {
			if seen[k] {
				return validation.Errorf(fmt.Sprintf("routes[%d].pathPrefix", i), "%s is claimed by an earlier route", k)
			}
			seen[k] = true
		}
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
	if err := validateHosts(r.Hosts); err != nil {
		return err
	}
	if err := validateHeaders(r.Headers); err != nil {
		return err
	}
	switch r.Protocol {
	case "", HTTP1, H2C:
	default:
		return validation.Errorf("protocol", "%q is not one of http1, h2c", r.Protocol)
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

func validateHosts(hosts []string) error {
	if len(hosts) > MaxHosts {
		return validation.Errorf("hosts", "at most %d, got %d", MaxHosts, len(hosts))
	}
	for i, h := range hosts {
		if len(h) > 253 || !hostPattern.MatchString(h) {
			return validation.Errorf(fmt.Sprintf("hosts[%d]", i), "%q is not a lower-case DNS name without a port", h)
		}
		if slices.Contains(hosts[:i], h) {
			return validation.Errorf(fmt.Sprintf("hosts[%d]", i), "%q is listed twice", h)
		}
	}
	return nil
}

func validateHeaders(headers []HeaderMatch) error {
	if len(headers) > MaxHeaders {
		return validation.Errorf("headers", "at most %d, got %d", MaxHeaders, len(headers))
	}
	for i, h := range headers {
		field := fmt.Sprintf("headers[%d]", i)
		switch {
		case len(h.Name) > 100 || !headerNamePattern.MatchString(h.Name):
			return validation.Errorf(field+".name", "%q is not a lower-case header name", h.Name)
		case h.Name == "host":
			return validation.Errorf(field+".name", "match the host with hosts, not a header")
		case slices.ContainsFunc(headers[:i], func(o HeaderMatch) bool { return o.Name == h.Name }):
			return validation.Errorf(field+".name", "%q is matched twice", h.Name)
		case h.Value == "" || len(h.Value) > MaxHeaderValue || strings.ContainsFunc(h.Value, func(c rune) bool { return c < 0x20 || c > 0x7e }):
			return validation.Errorf(field+".value", "must be 1-%d printable ASCII characters", MaxHeaderValue)
		}
	}
	return nil
}
