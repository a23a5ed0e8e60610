package ir_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nemesis-ml/nemesis/internal/testing/fixture"
	"github.com/nemesis-ml/nemesis/internal/validation"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

func environment(routes ...fixture.Route) ir.Environment {
	return ir.Environment{Name: "prod", Settings: settings.Defaults("prod"), Routes: fixture.Routes(routes...)}
}

func TestNormalize(t *testing.T) {
	a := fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080)
	for name, tc := range map[string]struct {
		in      []fixture.Route
		want    []fixture.Route
		dropped map[string]string // route name → what its reason says
	}{
		"nothing": {},
		"most specific prefix first, then by name": {
			in: []fixture.Route{
				fixture.NewRoute("ml/z").WithPathPrefix("/"),
				fixture.NewRoute("ml/b").WithPathPrefix("/models/resnet"),
				fixture.NewRoute("ml/c").WithPathPrefix("/models/resnet-large"),
				fixture.NewRoute("ml/a").WithPathPrefix("/models/abcdef"),
			},
			want: []fixture.Route{
				fixture.NewRoute("ml/c").WithPathPrefix("/models/resnet-large"),
				fixture.NewRoute("ml/a").WithPathPrefix("/models/abcdef"),
				fixture.NewRoute("ml/b").WithPathPrefix("/models/resnet"),
				fixture.NewRoute("ml/z").WithPathPrefix("/"),
			},
		},
		"endpoints sorted by address then port": {
			in:   []fixture.Route{fixture.NewRoute("ml/a").WithEndpoint("10.0.0.2", 80).WithEndpoint("10.0.0.1", 9090).WithEndpoint("10.0.0.1", 8080)},
			want: []fixture.Route{fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080).WithEndpoint("10.0.0.1", 9090).WithEndpoint("10.0.0.2", 80)},
		},
		"a duplicate prefix stays with the first by name": {
			in: []fixture.Route{
				fixture.NewRoute("team-b/model").WithPathPrefix("/models/shared"),
				fixture.NewRoute("team-a/model").WithPathPrefix("/models/shared"),
			},
			want:    []fixture.Route{fixture.NewRoute("team-a/model").WithPathPrefix("/models/shared")},
			dropped: map[string]string{"team-b/model": "taken by team-a/model"},
		},
		"an invalid route does not claim its prefix": {
			in: []fixture.Route{
				fixture.NewRoute("ml/a").WithPathPrefix("/models/shared").WithHoldTimeout(-1),
				fixture.NewRoute("ml/b").WithPathPrefix("/models/shared"),
			},
			want:    []fixture.Route{fixture.NewRoute("ml/b").WithPathPrefix("/models/shared")},
			dropped: map[string]string{"ml/a": "holdTimeoutSeconds"},
		},
		"invalid routes are dropped with their reason": {
			in: []fixture.Route{
				a,
				fixture.NewRoute("no-namespace"),
				fixture.NewRoute("ml/relative").WithPathPrefix("models/x"),
				fixture.NewRoute("ml/query").WithPathPrefix("/models/x?y=1"),
				fixture.NewRoute("ml/space").WithPathPrefix("/models/x y"),
				fixture.NewRoute("ml/negative").WithHoldTimeout(-5),
				fixture.NewRoute("ml/no-port").WithEndpoint("10.0.0.1", 0),
				fixture.NewRoute("ml/no-address").WithEndpoint("", 80),
				fixture.NewRoute("ml/big-port").WithEndpoint("10.0.0.1", 70000),
			},
			want: []fixture.Route{a},
			dropped: map[string]string{
				"no-namespace":  "name: ",
				"ml/relative":   "pathPrefix: ",
				"ml/query":      "pathPrefix: ",
				"ml/space":      "pathPrefix: ",
				"ml/negative":   "holdTimeoutSeconds: ",
				"ml/no-port":    "endpoints[0]: ",
				"ml/no-address": "endpoints[0]: ",
				"ml/big-port":   "endpoints[0]: ",
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			env := environment(tc.in...)
			dropped := env.Normalize()
			if want := fixture.Routes(tc.want...); !reflect.DeepEqual(env.Routes, want) && len(want)+len(env.Routes) > 0 {
				t.Errorf("kept\n  %+v\nwant\n  %+v", env.Routes, want)
			}
			got := map[string]string{}
			for _, d := range dropped {
				got[d.Route.Name] = d.Reason.Error()
			}
			if len(got) != len(tc.dropped) {
				t.Errorf("dropped %v, want %v", got, tc.dropped)
			}
			for name, reason := range tc.dropped {
				if !strings.Contains(got[name], reason) {
					t.Errorf("%s dropped for %q, want a reason with %q", name, got[name], reason)
				}
			}
			if err := env.Validate(); err != nil {
				t.Errorf("what Normalize kept fails Validate: %v", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080)
	for name, tc := range map[string]struct {
		env   ir.Environment
		field string // "" when valid
	}{
		"valid":                  {environment(ok, fixture.NewRoute("ml/b")), ""},
		"no routes":              {environment(), ""},
		"invalid name":           {ir.Environment{Name: "Prod", Settings: settings.Defaults("Prod")}, "environment"},
		"settings of another":    {ir.Environment{Name: "prod", Settings: settings.Defaults("staging")}, "settings.environment"},
		"invalid settings":       {ir.Environment{Name: "prod", Settings: settings.Settings{Environment: "prod", Policy: "fastest", MaxConnections: 1, TimeoutSeconds: 1}}, "policy"},
		"a prefix claimed twice": {environment(ok, fixture.NewRoute("ml/b").WithPathPrefix("/models/a")), "routes[1].pathPrefix"},
		"an invalid route":       {environment(ok, fixture.NewRoute("ml/b").WithEndpoint("10.0.0.1", 0)), "endpoints[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.env.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var fe *validation.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate = %v, want a field error on %s", err, tc.field)
			}
		})
	}
	// A route's error says which route.
	err := environment(ok, fixture.NewRoute("ml/b").WithHoldTimeout(-1)).Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "routes[1]: holdTimeoutSeconds: ") {
		t.Errorf("Validate of a bad second route = %v, want it to start with routes[1]", err)
	}
}

func TestRouteValidateRefuses(t *testing.T) {
	ok := ir.Route{Name: "ml/a", PathPrefix: "/"}
	cases := map[string]struct {
		edit  func(*ir.Route)
		field string
	}{
		"host with a port":       {func(r *ir.Route) { r.Hosts = []string{"a.example:80"} }, "hosts[0]"},
		"upper-case host":        {func(r *ir.Route) { r.Hosts = []string{"A.example"} }, "hosts[0]"},
		"wildcard host":          {func(r *ir.Route) { r.Hosts = []string{"*.example"} }, "hosts[0]"},
		"host twice":             {func(r *ir.Route) { r.Hosts = []string{"a.example", "a.example"} }, "hosts[1]"},
		"pseudo-header":          {func(r *ir.Route) { r.Headers = []ir.HeaderMatch{{Name: ":authority", Value: "a"}} }, "headers[0].name"},
		"host as a header":       {func(r *ir.Route) { r.Headers = []ir.HeaderMatch{{Name: "host", Value: "a"}} }, "headers[0].name"},
		"empty header value":     {func(r *ir.Route) { r.Headers = []ir.HeaderMatch{{Name: "x-model", Value: ""}} }, "headers[0].value"},
		"header value with CRLF": {func(r *ir.Route) { r.Headers = []ir.HeaderMatch{{Name: "x-model", Value: "a\r\nb"}} }, "headers[0].value"},
		"header twice": {func(r *ir.Route) {
			r.Headers = []ir.HeaderMatch{{Name: "x-model", Value: "a"}, {Name: "x-model", Value: "b"}}
		}, "headers[1].name"},
		"unknown protocol": {func(r *ir.Route) { r.Protocol = "grpc" }, "protocol"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := ok
			c.edit(&r)
			var fe *validation.FieldError
			if err := r.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("Validate() = %v, want a field error on %s", err, c.field)
			}
		})
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid route refused: %v", err)
	}
}

// Two routes conflict only when they share a host (or both answer any
// host) and the headers, besides the prefix; the older keeps the match and
// the other is dropped with the owner named.
func TestNormalizeConflicts(t *testing.T) {
	grpc := "/inference.GRPCInferenceService/"
	env := ir.Environment{Name: "default", Routes: []ir.Route{
		{Name: "ml/b-header", PathPrefix: grpc, Headers: []ir.HeaderMatch{{Name: "x-model", Value: "b"}}},
		{Name: "ml/a-host", PathPrefix: grpc, Hosts: []string{"a.example"}},
		{Name: "ml/c-any", PathPrefix: grpc},
		{Name: "ml/d-same-host", PathPrefix: grpc, Hosts: []string{"z.example", "a.example"}},
		{Name: "ml/e-same-header", PathPrefix: grpc, Headers: []ir.HeaderMatch{{Name: "x-model", Value: "b"}}},
		{Name: "ml/f-other-header", PathPrefix: grpc, Headers: []ir.HeaderMatch{{Name: "x-model", Value: "f"}}},
	}}
	dropped := env.Normalize()
	var kept []string
	for _, r := range env.Routes {
		kept = append(kept, r.Name)
	}
	// Headers first (more specific at the same prefix), then by name.
	if got, want := strings.Join(kept, " "), "ml/b-header ml/f-other-header ml/a-host ml/c-any"; got != want {
		t.Errorf("kept %s, want %s", got, want)
	}
	reasons := map[string]string{}
	for _, d := range dropped {
		reasons[d.Route.Name] = d.Reason.Error()
	}
	want := map[string]string{
		"ml/d-same-host":   "path prefix " + grpc + " is taken by ml/a-host",
		"ml/e-same-header": "path prefix " + grpc + " is taken by ml/b-header",
	}
	if len(reasons) != len(want) {
		t.Errorf("dropped %v, want %v", reasons, want)
	}
	for name, reason := range want {
		if reasons[name] != reason {
			t.Errorf("%s dropped for %q, want %q", name, reasons[name], reason)
		}
	}
	env.Settings.Environment = env.Name
	env.Settings.Policy, env.Settings.MaxConnections, env.Settings.TimeoutSeconds = "round_robin", 1, 1
	env.Settings.RetryBudgetPercent, env.Settings.StreamIdleTimeoutSeconds = 20, 300
	if err := env.Validate(); err != nil {
		t.Errorf("normalized environment is invalid: %v", err)
	}
}
