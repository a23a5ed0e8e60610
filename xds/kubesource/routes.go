// Package kubesource watches CustomAutoscalers, Services and EndpointSlices
// through controller-runtime's cache and turns them into the routes of each
// environment.
package kubesource

import (
	"cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// Objects are the Kubernetes objects routes are built from.
type Objects struct {
	Autoscalers []v1alpha1.CustomAutoscaler
	Services    []corev1.Service
	Slices      []discoveryv1.EndpointSlice
}

// Problem is an autoscaler whose route could not be fully built.
type Problem struct {
	Autoscaler string
	Message    string
}

// Routes returns the routes of every environment. An autoscaler whose
// Service or port is missing still gets its route, marked NoService, so
// Envoy answers 503 for it rather than 404, and the problem is reported.
func Routes(objs Objects) (map[string][]ir.Route, []Problem) {
	services := map[string]corev1.Service{}
	for _, svc := range objs.Services {
		services[svc.Namespace+"/"+svc.Name] = svc
	}
	slicesOf := map[string][]discoveryv1.EndpointSlice{}
	for _, sl := range objs.Slices {
		name := sl.Labels[discoveryv1.LabelServiceName]
		key := sl.Namespace + "/" + name
		slicesOf[key] = append(slicesOf[key], sl)
	}

	out := map[string][]ir.Route{}
	var problems []Problem
	for _, ca := range objs.Autoscalers {
		spec := ca.Spec.Route
		if spec == nil || !ca.DeletionTimestamp.IsZero() {
			continue
		}
		name := ca.Namespace + "/" + ca.Name
		route := ir.Route{Name: name, PathPrefix: spec.PathPrefix, Hosts: spec.Hosts,
			Protocol: ir.Protocol(spec.Protocol), Endpoints: []ir.Endpoint{}, CreatedAt: ca.CreationTimestamp.Time}
		for _, h := range spec.Headers {
			route.Headers = append(route.Headers, ir.HeaderMatch{Name: h.Name, Value: h.Value})
		}
		if ca.Spec.ScaleToZero != nil {
			route.HoldTimeoutSeconds = ca.Spec.ScaleToZero.HoldTimeoutSeconds
		}
		key := ca.Namespace + "/" + spec.Service
		svc, ok := services[key]
		switch {
		case !ok:
			route.NoService = true
			problems = append(problems, Problem{name, "service " + key + " not found"})
		default:
			port, found := servicePort(svc, spec.Port)
			if !found {
				route.NoService = true
				problems = append(problems, Problem{name, "service " + key + " has no port " + itoa(spec.Port)})
				break
			}
			if route.Protocol == "" {
				route.Protocol = protocolOf(port)
			}
			route.Endpoints = readyEndpoints(slicesOf[key], port.Name)
		}
		env := spec.Environment
		if env == "" {
			env = "default"
		}
		out[env] = append(out[env], route)
	}
	return out, problems
}

func servicePort(svc corev1.Service, port int32) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// protocolOf reads a Service port's appProtocol: HTTP/2 without TLS for
// kubernetes.io/h2c (the standard name) and grpc (what KServe and Knative
// users write), the default (HTTP/1.1) for anything else.
func protocolOf(p corev1.ServicePort) ir.Protocol {
	if p.AppProtocol != nil {
		switch *p.AppProtocol {
		case "kubernetes.io/h2c", "grpc", "h2c":
			return ir.H2C
		}
	}
	return ""
}

// readyEndpoints lists the ready addresses of the slices on the port named
// portName (EndpointSlices carry target ports by the Service port's name).
func readyEndpoints(slices []discoveryv1.EndpointSlice, portName string) []ir.Endpoint {
	out := []ir.Endpoint{}
	seen := map[ir.Endpoint]bool{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32
		for _, p := range sl.Ports {
			if p.Port != nil && (p.Name == nil && portName == "" || p.Name != nil && *p.Name == portName) {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			// Ready unset means ready (the EndpointSlice API's convention).
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			pod := ""
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
				pod = cmp.Or(ref.Namespace, sl.Namespace) + "/" + ref.Name
			}
			for _, addr := range ep.Addresses {
				e := ir.Endpoint{Address: addr, Port: uint32(port), Pod: pod}
				if !seen[e] {
					seen[e] = true
					out = append(out, e)
				}
			}
		}
	}
	return out
}
