package ir

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestNormalizeKeepsTheOlderRoute(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	route := func(name, prefix string, age int) Route {
		return Route{Name: name, PathPrefix: prefix, CreatedAt: t0.Add(time.Duration(age) * time.Hour)}
	}
	for name, tc := range map[string]struct {
		routes []Route
		kept   []string
		// lost maps a dropped route to the owner its TakenError names.
		lost map[string]string
	}{
		"same prefix: the older keeps it, whatever the names": {
			routes: []Route{route("aaa/digits", "/models/digits", 2), route("team/digits", "/models/digits", 1)},
			kept:   []string{"team/digits"},
			lost:   map[string]string{"aaa/digits": "team/digits"},
		},
		"same prefix, same creation time: the first name": {
			routes: []Route{route("b/x", "/x", 1), route("a/x", "/x", 1)},
			kept:   []string{"a/x"},
			lost:   map[string]string{"b/x": "a/x"},
		},
		"a longer prefix under another namespace's older route shadows it": {
			routes: []Route{route("team/digits", "/models/digits", 1), route("aaa/steal", "/models/digits/predict", 2)},
			kept:   []string{"team/digits"},
			lost:   map[string]string{"aaa/steal": "team/digits"},
		},
		"a longer prefix in the same namespace is the owner's to route": {
			routes: []Route{route("team/digits", "/models/digits", 1), route("team/digits-v2", "/models/digits/v2", 2)},
			kept:   []string{"team/digits-v2", "team/digits"},
		},
		"an older longer prefix is not taken by a newer shorter one": {
			routes: []Route{route("team/digits", "/models/digits", 1), route("other/models", "/models", 2)},
			kept:   []string{"team/digits", "other/models"},
		},
		"a dropped route owns nothing": {
			routes: []Route{route("a/x", "/x", 1), route("b/x", "/x", 2), route("c/y", "/x/y", 3)},
			kept:   []string{"a/x"},
			lost:   map[string]string{"b/x": "a/x", "c/y": "a/x"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			env := Environment{Name: "production", Routes: tc.routes}
			dropped := env.Normalize()
			var kept []string
			for _, r := range env.Routes {
				kept = append(kept, r.Name)
			}
			if !slices.Equal(kept, tc.kept) {
				t.Fatalf("kept %v, want %v", kept, tc.kept)
			}
			if len(dropped) != len(tc.lost) {
				t.Fatalf("dropped %v, want %v", dropped, tc.lost)
			}
			for _, d := range dropped {
				var taken *TakenError
				if !errors.As(d.Reason, &taken) || taken.Owner != tc.lost[d.Route.Name] {
					t.Fatalf("%s dropped for %v, want taken by %s", d.Route.Name, d.Reason, tc.lost[d.Route.Name])
				}
			}
		})
	}
}

func TestNormalizeDropsInvalidRoutes(t *testing.T) {
	env := Environment{Name: "production", Routes: []Route{{Name: "no-namespace", PathPrefix: "/a"}, {Name: "ns/b", PathPrefix: "b"}}}
	dropped := env.Normalize()
	if len(env.Routes) != 0 || len(dropped) != 2 {
		t.Fatalf("kept %v, dropped %v", env.Routes, dropped)
	}
}
