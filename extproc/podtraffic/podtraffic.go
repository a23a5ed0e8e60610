// Package podtraffic times each pod's requests from the access-log entries
// Envoy already sends to serve, so that no proxy in the pod has to: per pod
// and per interval it counts the requests and errors, and takes the mean
// and p95 upstream time and the mean number of requests in flight, as
// podmetric samples of source "envoy". It does no I/O: serve feeds it
// entries and routes, and stores what Flush returns.
package podtraffic

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

// Request is what one access-log entry says of the pod that served it.
type Request struct {
	// Route is the entry's route (the autoscaler, namespace/name).
	Route string
	// Upstream is the pod's address, ip:port, when Envoy sent it the
	// request; empty when the request failed before reaching a pod.
	Upstream string
	// Duration is from the request's first byte sent to the pod to the
	// response's last byte received from it.
	Duration time.Duration
	// Failed is a 5xx from the pod, or its reset before answering.
	Failed bool
}

// maxKept bounds the response times kept per pod and interval for the
// p95: past it, a uniform sample of them is kept.
const maxKept = 4096

// window is one pod's requests of the current interval.
type window struct {
	requests, errors int
	total            time.Duration
	kept             []time.Duration
}

func (w *window) add(d time.Duration, failed bool) {
	w.requests++
	w.total += d
	if failed {
		w.errors++
	}
	if len(w.kept) < maxKept {
		w.kept = append(w.kept, d)
	} else if i := rand.IntN(w.requests); i < maxKept {
		w.kept[i] = d
	}
}

// Counts are what Observe could not put on a pod since the last Flush.
type Counts struct {
	// BeforePod are requests that failed before reaching a pod, by route:
	// errors of the route, not of any pod.
	BeforePod map[string]int
	// Unknown are requests to an address that is no pod of a route of
	// the Envoy's environment (one removed since, another environment's,
	// or not a pod at all).
	Unknown int
}

// Aggregator collects requests between flushes. It is safe for concurrent
// use: every access-log stream observes into it.
type Aggregator struct {
	mu sync.Mutex
	// pods maps, per environment, an endpoint address to its pod: an
	// Envoy's entries count only for pods of its own environment's
	// routes, so an Envoy of one environment cannot move another's
	// autoscalers. routes lists each environment's pods, which get a
	// sample every interval while one of the environment's Envoys streams
	// logs here, requests or not.
	pods    map[string]map[string]string
	routes  map[string][]string
	streams map[string]int
	// connected says which environments have an Envoy on this replica's
	// xDS: Envoy opens its access-log stream on its first entry only, so
	// after a restart of serve an idle environment has no stream, yet its
	// idle pods must report no requests for a scale to zero.
	connected func() map[string]bool
	windows   map[string]*window
	counts    Counts
}

// New returns an empty aggregator; connected (may be nil) names the
// environments whose Envoys hold an xDS stream to this replica.
func New(connected func() map[string]bool) *Aggregator {
	return &Aggregator{
		pods: map[string]map[string]string{}, routes: map[string][]string{}, streams: map[string]int{},
		connected: connected, windows: map[string]*window{}, counts: Counts{BeforePod: map[string]int{}},
	}
}

// SetRoutes replaces the endpoints the aggregator knows: the routes of
// every environment, whose endpoints name their pods.
func (a *Aggregator) SetRoutes(routes map[string][]ir.Route) {
	pods := map[string]map[string]string{}
	byEnv := map[string][]string{}
	for env, rs := range routes {
		for _, r := range rs {
			for _, e := range r.Endpoints {
				if e.Pod == "" {
					continue
				}
				if pods[env] == nil {
					pods[env] = map[string]string{}
				}
				pods[env][e.HostPort()] = e.Pod
				byEnv[env] = append(byEnv[env], e.Pod)
			}
		}
	}
	for env := range byEnv {
		slices.Sort(byEnv[env])
		byEnv[env] = slices.Compact(byEnv[env])
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pods, a.routes = pods, byEnv
}

// Open notes an access-log stream from an Envoy of environment; the
// returned func notes its end.
func (a *Aggregator) Open(environment string) (closed func()) {
	a.mu.Lock()
	a.streams[environment]++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.streams[environment]--; a.streams[environment] <= 0 {
				delete(a.streams, environment)
			}
		})
	}
}

// Observe adds the requests of one batch of entries of an Envoy of
// environment.
func (a *Aggregator) Observe(environment string, reqs []Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pods := a.pods[environment]
	for _, r := range reqs {
		if r.Upstream == "" {
			a.counts.BeforePod[r.Route]++
			continue
		}
		pod, ok := pods[r.Upstream]
		if !ok {
			a.counts.Unknown++
			continue
		}
		w := a.windows[pod]
		if w == nil {
			w = &window{}
			a.windows[pod] = w
		}
		w.add(r.Duration, r.Failed)
	}
}

// Flush returns one sample per pod that served requests since the last
// Flush, or that belongs to a route of an environment whose Envoys stream
// logs or hold xDS here, stamped at now; interval is the time since the
// last Flush. It also returns, and resets, what could not be put on a pod.
func (a *Aggregator) Flush(now time.Time, interval time.Duration) ([]podmetric.Sample, Counts) {
	var here map[string]bool
	if a.connected != nil {
		here = a.connected()
	}
	a.mu.Lock()
	windows, counts := a.windows, a.counts
	a.windows, a.counts = map[string]*window{}, Counts{BeforePod: map[string]int{}}
	idle := []string{}
	for env, pods := range a.routes {
		if a.streams[env] == 0 && !here[env] {
			continue
		}
		for _, pod := range pods {
			if windows[pod] == nil {
				idle = append(idle, pod)
			}
		}
	}
	a.mu.Unlock()

	samples := make([]podmetric.Sample, 0, len(windows)+len(idle))
	for pod, w := range windows {
		samples = append(samples, w.sample(pod, now, interval))
	}
	slices.Sort(idle)
	for _, pod := range slices.Compact(idle) {
		samples = append(samples, podmetric.Sample{ID: pod, Source: podmetric.SourceEnvoy, ReceivedAt: now})
	}
	slices.SortFunc(samples, func(x, y podmetric.Sample) int { return cmp.Compare(x.ID, y.ID) })
	return samples, counts
}

func (w *window) sample(pod string, now time.Time, interval time.Duration) podmetric.Sample {
	s := podmetric.Sample{
		ID: pod, Source: podmetric.SourceEnvoy, ReceivedAt: now,
		RequestCount:        float64(w.requests),
		ErrorCount:          float64(w.errors),
		AverageResponseTime: ms(w.total) / float64(w.requests),
	}
	if interval > 0 {
		s.RequestRate = float64(w.requests) / interval.Seconds()
		// Little's law: the time spent in requests over the interval is
		// their mean number in flight.
		s.InFlightRequests = w.total.Seconds() / interval.Seconds()
	}
	slices.Sort(w.kept)
	s.P95ResponseTime = ms(w.kept[(len(w.kept)*95+99)/100-1])
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
