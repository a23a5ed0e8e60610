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
