package kubesource_test

import (
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/fixture"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/kubesource"
)

// objects gathers builders into kubesource.Objects.
type objects struct {
	autoscalers []fixture.CustomAutoscaler
	services    []fixture.Service
	slices      []fixture.EndpointSlice
}

func (o objects) build() kubesource.Objects {
	var out kubesource.Objects
	for _, ca := range o.autoscalers {
		out.Autoscalers = append(out.Autoscalers, ca.CustomAutoscaler)
	}
	for _, s := range o.services {
		out.Services = append(out.Services, s.Service)
	}
	for _, s := range o.slices {
		out.Slices = append(out.Slices, s.EndpointSlice)
	}
	return out
}

func TestRoutes(t *testing.T) {
	resnet := fixture.NewCustomAutoscaler("ml/resnet").
		WithRoute(v1alpha1.Route{Environment: "prod", PathPrefix: "/models/resnet", Service: "resnet", Port: 80})
	service := fixture.NewService("ml/resnet").WithPort("http", 80)
	slice := fixture.NewEndpointSlice("ml/resnet-abc", "resnet").WithPort("http", 8080)
	route := fixture.NewRoute("ml/resnet")

	for name, tc := range map[string]struct {
		objects  objects
		want     map[string][]fixture.Route
		problems []kubesource.Problem
	}{
		"nothing": {want: map[string][]fixture.Route{}},
		"ready addresses on the Service port's target": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{service},
				slices: []fixture.EndpointSlice{slice.WithReadyAddress("10.0.0.1", "10.0.0.2").
					WithNotReadyAddress("10.0.0.3").WithUnknownReadinessAddress("10.0.0.4")},
			},
			want: map[string][]fixture.Route{"prod": {route.WithEndpoint("10.0.0.1", 8080).WithEndpoint("10.0.0.2", 8080).WithEndpoint("10.0.0.4", 8080)}},
		},
		"one Service port among several, the others' slices ignored": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{fixture.NewService("ml/resnet").WithPort("metrics", 9090).WithPort("http", 80)},
				slices: []fixture.EndpointSlice{
					fixture.NewEndpointSlice("ml/resnet-abc", "resnet").WithPort("metrics", 9100).WithPort("http", 8080).WithReadyAddress("10.0.0.1"),
					fixture.NewEndpointSlice("ml/other-abc", "other").WithPort("http", 8080).WithReadyAddress("10.9.9.9"),
				},
			},
			want: map[string][]fixture.Route{"prod": {route.WithEndpoint("10.0.0.1", 8080)}},
		},
		"an unnamed port": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{fixture.NewService("ml/resnet").WithPort("", 80)},
				slices:      []fixture.EndpointSlice{fixture.NewEndpointSlice("ml/resnet-abc", "resnet").WithPort("", 8080).WithReadyAddress("10.0.0.1")},
			},
			want: map[string][]fixture.Route{"prod": {route.WithEndpoint("10.0.0.1", 8080)}},
		},
		"an address in two slices counts once; FQDN slices are skipped": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{service},
				slices: []fixture.EndpointSlice{
					slice.WithReadyAddress("10.0.0.1"),
					fixture.NewEndpointSlice("ml/resnet-def", "resnet").WithPort("http", 8080).WithReadyAddress("10.0.0.1", "10.0.0.2"),
					fixture.NewEndpointSlice("ml/resnet-fqdn", "resnet").WithAddressType(discoveryv1.AddressTypeFQDN).
						WithPort("http", 8080).WithReadyAddress("resnet.example.com"),
				},
			},
			want: map[string][]fixture.Route{"prod": {route.WithEndpoint("10.0.0.1", 8080).WithEndpoint("10.0.0.2", 8080)}},
		},
		"IPv6": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{service},
				slices:      []fixture.EndpointSlice{slice.WithAddressType(discoveryv1.AddressTypeIPv6).WithReadyAddress("fd00::1")},
			},
			want: map[string][]fixture.Route{"prod": {route.WithEndpoint("fd00::1", 8080)}},
		},
		"no environment means default; the hold timeout is carried": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{fixture.NewCustomAutoscaler("ml/resnet").WithHoldTimeout(90).
					WithRoute(v1alpha1.Route{PathPrefix: "/models/resnet", Service: "resnet", Port: 80})},
				services: []fixture.Service{service},
			},
			want: map[string][]fixture.Route{"default": {route.WithHoldTimeout(90)}},
		},
		"a missing Service leaves the route without endpoints or cluster": {
			objects:  objects{autoscalers: []fixture.CustomAutoscaler{resnet}, slices: []fixture.EndpointSlice{slice.WithReadyAddress("10.0.0.1")}},
			want:     map[string][]fixture.Route{"prod": {route.WithoutService()}},
			problems: []kubesource.Problem{{Autoscaler: "ml/resnet", Message: "service ml/resnet not found"}},
		},
		"a missing port leaves the route without endpoints or cluster": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet},
				services:    []fixture.Service{fixture.NewService("ml/resnet").WithPort("http", 8000)},
				slices:      []fixture.EndpointSlice{slice.WithReadyAddress("10.0.0.1")},
			},
			want:     map[string][]fixture.Route{"prod": {route.WithoutService()}},
			problems: []kubesource.Problem{{Autoscaler: "ml/resnet", Message: "service ml/resnet has no port 80"}},
		},
		"a Service of another namespace does not count": {
			objects:  objects{autoscalers: []fixture.CustomAutoscaler{resnet}, services: []fixture.Service{fixture.NewService("other/resnet").WithPort("http", 80)}},
			want:     map[string][]fixture.Route{"prod": {route.WithoutService()}},
			problems: []kubesource.Problem{{Autoscaler: "ml/resnet", Message: "service ml/resnet not found"}},
		},
		"no route, or being deleted: nothing": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{fixture.NewCustomAutoscaler("ml/resnet"), resnet.Deleting()},
				services:    []fixture.Service{service},
			},
			want: map[string][]fixture.Route{},
		},
		"several environments": {
			objects: objects{
				autoscalers: []fixture.CustomAutoscaler{resnet, fixture.NewCustomAutoscaler("ml/bert").
					WithRoute(v1alpha1.Route{Environment: "staging", PathPrefix: "/models/bert", Service: "resnet", Port: 80})},
				services: []fixture.Service{service},
			},
			want: map[string][]fixture.Route{"prod": {route}, "staging": {fixture.NewRoute("ml/bert")}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, problems := kubesource.Routes(tc.objects.build())
			want := map[string][]ir.Route{}
			for env, rs := range tc.want {
				want[env] = fixture.Routes(rs...)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("routes\n  %+v\nwant\n  %+v", got, want)
			}
			if !reflect.DeepEqual(problems, tc.problems) {
				t.Errorf("problems %+v, want %+v", problems, tc.problems)
			}
		})
	}
}
