package podtraffic

import (
	"math"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func routes() map[string][]ir.Route {
	return map[string][]ir.Route{
		"prod": {{Name: "ml/digits", Endpoints: []ir.Endpoint{
			{Address: "10.0.0.1", Port: 8080, Pod: "ml/digits-a"},
			{Address: "10.0.0.2", Port: 8080, Pod: "ml/digits-b"},
			{Address: "10.0.0.9", Port: 8080}, // no pod named: never sampled
		}}},
		"staging": {{Name: "ml/chat", Endpoints: []ir.Endpoint{{Address: "10.0.1.1", Port: 8000, Pod: "ml/chat-a"}}}},
	}
}

func TestFlushTimesEachPodFromItsRequests(t *testing.T) {
	a := New(nil)
	a.SetRoutes(routes())
	closeProd := a.Open("prod")
	var reqs []Request
	for i := range 100 {
		// ml/digits-a: 1..100 ms, the last five failed.
		reqs = append(reqs, Request{Route: "ml/digits", Upstream: "10.0.0.1:8080", Duration: time.Duration(i+1) * time.Millisecond, Failed: i >= 95})
	}
	reqs = append(reqs,
		Request{Route: "ml/digits"}, // no healthy pod: the route's error
		Request{Route: "ml/digits"},
		Request{Route: "ml/digits", Upstream: "10.0.0.7:8080", Duration: time.Second}, // a pod since removed
	)
	a.Observe("prod", reqs)
	samples, counts := a.Flush(t0, 2*time.Second)

	if len(samples) != 2 {
		t.Fatalf("samples %+v, want digits-a and the idle digits-b (chat's environment streams nothing here)", samples)
	}
	busy, idle := samples[0], samples[1]
	want := podmetric.Sample{
		ID: "ml/digits-a", Source: podmetric.SourceEnvoy, ReceivedAt: t0,
		RequestCount: 100, RequestRate: 50, ErrorCount: 5,
		AverageResponseTime: 50.5, P95ResponseTime: 95,
		InFlightRequests: 5.050 / 2, // 5.05 s of requests over 2 s
	}
	if !near(busy, want) {
		t.Errorf("busy pod:\n got %+v\nwant %+v", busy, want)
	}
	if (idle != podmetric.Sample{ID: "ml/digits-b", Source: podmetric.SourceEnvoy, ReceivedAt: t0}) {
		t.Errorf("idle pod: %+v, want a sample of no requests and no response time", idle)
	}
	if counts.BeforePod["ml/digits"] != 2 || counts.Unknown != 1 {
		t.Errorf("counts %+v, want 2 failed before a pod and 1 unknown upstream", counts)
	}

	// The next interval starts empty; once the stream closes, idle pods
	// are no longer sampled (nobody here watches their traffic).
	if samples, _ := a.Flush(t0.Add(time.Second), time.Second); len(samples) != 2 || samples[0].RequestCount+samples[1].RequestCount != 0 {
		t.Errorf("second flush: %+v", samples)
	}
	closeProd()
	closeProd()
	if samples, _ := a.Flush(t0.Add(2*time.Second), time.Second); len(samples) != 0 {
		t.Errorf("after the stream closed: %+v", samples)
	}
}

// An Envoy connected over xDS that has logged nothing yet (it opens its
// access-log stream on its first entry) still has its environment's idle
// pods reported: a scale to zero needs their request rate of 0.
func TestIdlePodsOfAnEnvironmentWithAnEnvoyOnXDS(t *testing.T) {
	a := New(func() map[string]bool { return map[string]bool{"staging": true} })
	a.SetRoutes(routes())
	samples, _ := a.Flush(t0, time.Second)
	if len(samples) != 1 || samples[0] != (podmetric.Sample{ID: "ml/chat-a", Source: podmetric.SourceEnvoy, ReceivedAt: t0}) {
		t.Fatalf("samples %+v, want staging's idle pod only", samples)
	}
}

func TestRequestsToAPodAfterItLeftARouteAreUnknown(t *testing.T) {
	a := New(nil)
	a.SetRoutes(routes())
	a.SetRoutes(map[string][]ir.Route{})
	a.Observe("prod", []Request{{Route: "ml/digits", Upstream: "10.0.0.1:8080", Duration: time.Millisecond}})
	if samples, counts := a.Flush(t0, time.Second); len(samples) != 0 || counts.Unknown != 1 {
		t.Fatalf("samples %+v, counts %+v", samples, counts)
	}
}

// An Envoy of staging naming a pod of prod's routes moves nothing of prod.
func TestEntriesCountOnlyForPodsOfTheirEnvironment(t *testing.T) {
	a := New(nil)
	a.SetRoutes(routes())
	a.Observe("staging", []Request{{Route: "ml/digits", Upstream: "10.0.0.1:8080", Duration: time.Second}})
	a.Observe("staging", []Request{{Route: "ml/chat", Upstream: "10.0.1.1:8000", Duration: time.Millisecond}})
	samples, counts := a.Flush(t0, time.Second)
	if len(samples) != 1 || samples[0].ID != "ml/chat-a" || counts.Unknown != 1 {
		t.Fatalf("samples %+v, counts %+v: want only staging's ml/chat-a, and prod's pod unknown", samples, counts)
	}
}

// Past maxKept response times in one interval the p95 comes from a
// uniform sample of them; the mean and count stay exact.
func TestP95OfManyRequestsIsSampled(t *testing.T) {
	a := New(nil)
	a.SetRoutes(routes())
	reqs := make([]Request, 100_000)
	for i := range reqs {
		reqs[i] = Request{Upstream: "10.0.0.2:8080", Duration: time.Duration(i%100+1) * time.Millisecond}
	}
	a.Observe("prod", reqs)
	samples, _ := a.Flush(t0, time.Second)
	s := samples[0]
	if s.RequestCount != 100_000 || s.AverageResponseTime != 50.5 || s.P95ResponseTime < 93 || s.P95ResponseTime > 97 {
		t.Fatalf("sample %+v: want 100000 requests, mean 50.5 ms, p95 near 95 ms", s)
	}
}

func near(got, want podmetric.Sample) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return got.ID == want.ID && got.Source == want.Source && got.ReceivedAt.Equal(want.ReceivedAt) &&
		eq(got.RequestCount, want.RequestCount) && eq(got.RequestRate, want.RequestRate) &&
		eq(got.ErrorCount, want.ErrorCount) && eq(got.AverageResponseTime, want.AverageResponseTime) &&
		eq(got.P95ResponseTime, want.P95ResponseTime) && eq(got.InFlightRequests, want.InFlightRequests)
}
