// Package activator is Envoy's ext_proc service for models scaled to zero.
// Envoy calls it only on routes without a ready endpoint (see
// xds/translate/extproc.go). It holds each request's headers in a bounded
// FIFO per route, asks the controller to wake the route's target, and lets
// the held requests through, in arrival order, once every Envoy of the
// environment has ACKed a snapshot in which the route has a ready endpoint.
// A request held past its hold timeout, or one that finds the queue full,
// gets a 503 with a JSON body saying why and a Retry-After header.
package activator

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/extproc/holdmeta"
	"github.com/nemesis-ml/nemesis/internal/identity"
)

// DefaultMaxHeld is how many requests one route may hold by default.
const DefaultMaxHeld = 1000

// Config is what the activator needs.
type Config struct {
	// MaxHeld bounds the requests held per route (DefaultMaxHeld when 0).
	MaxHeld int
	// Route returns the hold timeout of a route the control plane
	// published for the environment; ok is false for any other route,
	// which is refused before anything is held, woken or counted.
	Route func(environment, name string) (hold time.Duration, ok bool)
	// Ready blocks until every Envoy of the environment has ACKed a
	// snapshot in which the route has a ready endpoint.
	Ready func(ctx context.Context, environment, route string) error
	// Wake stamps the activation annotation of the CustomAutoscaler
	// namespace/name; it is called at once and then every renew interval
	// while requests are held.
	Wake func(ctx context.Context, namespace, name string, at time.Time) error
	// Released, when set, hears of each wake's first release, for the
	// decision record's stages.
	Released func(Release)
	// RenewInterval defaults to v1alpha1.ActivationRenewInterval.
	RenewInterval time.Duration
	Registerer    prometheus.Registerer
	Log           *slog.Logger
}

// Release is one wake's first release of held requests.
type Release struct {
	Environment, Route string
	// FirstHeld is when the first held request arrived, Ready when every
	// Envoy had ACKed a ready endpoint, Released when the requests went on.
	FirstHeld, Ready, Released time.Time
	Held                       int
}

// Activator serves envoy.service.ext_proc.v3.ExternalProcessor.
type Activator struct {
	extprocv3.UnimplementedExternalProcessorServer
	cfg     Config
	base    context.Context
	metrics *metrics

	mu     sync.Mutex
	routes map[routeKey]*route
}

type routeKey struct{ environment, name string }

// New returns an activator whose background work (waking targets, waiting
// for endpoints) ends with ctx.
func New(ctx context.Context, cfg Config) *Activator {
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = v1alpha1.ActivationRenewInterval
	}
	return &Activator{cfg: cfg, base: ctx, metrics: newMetrics(cfg.Registerer), routes: map[routeKey]*route{}}
}

// Register adds the ext_proc service to a gRPC server.
func (a *Activator) Register(s *grpc.Server) { extprocv3.RegisterExternalProcessorServer(s, a) }

// Held is how many requests this activator holds now, per route
// (namespace/name) over its environments; routes holding none are left out.
func (a *Activator) Held() map[string]int {
	a.mu.Lock()
	routes := make([]*route, 0, len(a.routes))
	for _, r := range a.routes {
		routes = append(routes, r)
	}
	a.mu.Unlock()
	out := map[string]int{}
	for _, r := range routes {
		r.mu.Lock()
		n := len(r.queue)
		r.mu.Unlock()
		if n > 0 {
			out[r.key.name] += n
		}
	}
	return out
}

// call is one request's route and how long it may be held.
type call struct {
	key  routeKey
	hold time.Duration
}

// callOf reads the route and environment Envoy sends with the stream. The
// environment must be the one of the client certificate, the route one the
// control plane published for it; the hold timeout is the route's own, from
// the route table, never from the stream.
func (a *Activator) callOf(ctx context.Context) (call, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	claimed, name := first(holdmeta.Environment), first(holdmeta.Route)
	if claimed == "" || !strings.Contains(name, "/") {
		return call{}, status.Errorf(codes.InvalidArgument, "metadata %s and %s are required", holdmeta.Route, holdmeta.Environment)
	}
	env, err := identity.Authorize(ctx, "ext_proc", claimed)
	if err != nil {
		a.cfg.Log.Warn("hold refused: the environment is not the client certificate's", "peer", identity.Describe(ctx), "err", err)
		return call{}, err
	}
	hold, ok := a.cfg.Route(env, name)
	if !ok {
		a.cfg.Log.Warn("hold refused: no such route in the environment", "environment", env, "route", name, "peer", identity.Describe(ctx))
		return call{}, status.Errorf(codes.PermissionDenied, "route %q is not published for environment %q", name, env)
	}
	return call{key: routeKey{environment: env, name: name}, hold: hold}, nil
}

// Process handles one request's ext_proc stream: Envoy sends the request
// headers, and the answer is CONTINUE once the route is ready, or a 503.
func (a *Activator) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	c, err := a.callOf(stream.Context())
	if err != nil {
		// No route label: a made-up route must not add a series.
		a.metrics.rejected.WithLabelValues("", "", reasonRefused).Inc()
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			// EOF after our answer, or Envoy gone: either way, done.
			return nil
		}
		if req.GetRequestHeaders() == nil {
			return status.Errorf(codes.InvalidArgument, "the activator processes request headers only, got %T", req.GetRequest())
		}
		if err := a.hold(stream, c); err != nil {
			return err
		}
	}
}

// hold queues the request and answers it when the route is ready, the hold
// times out or the queue is full.
func (a *Activator) hold(stream extprocv3.ExternalProcessor_ProcessServer, c call) error {
	h := &held{stream: stream, arrived: time.Now(), sent: make(chan error, 1)}
	r := a.route(c.key)
	if !r.enqueue(a, h) {
		a.metrics.rejected.WithLabelValues(c.key.environment, c.key.name, reasonQueueFull).Inc()
		a.cfg.Log.Warn("activator queue full; request rejected", "environment", c.key.environment, "route", c.key.name, "max", a.cfg.MaxHeld)
		return stream.Send(reject(reasonQueueFull, c.key.name,
			fmt.Sprintf("%d requests are already waiting for %s to wake up", a.cfg.MaxHeld, c.key.name), queueFullRetryAfter))
	}
	timer := time.NewTimer(c.hold)
	defer timer.Stop()
	select {
	case err := <-h.sent:
		return err
	case <-timer.C:
		if !r.remove(h) {
			return <-h.sent // released at the same moment
		}
		a.metrics.rejected.WithLabelValues(c.key.environment, c.key.name, reasonTimeout).Inc()
		a.cfg.Log.Warn("request held past its hold timeout; rejected", "environment", c.key.environment, "route", c.key.name, "hold", c.hold)
		return stream.Send(reject(reasonTimeout, c.key.name,
			fmt.Sprintf("%s did not become ready within the hold timeout of %s", c.key.name, c.hold), timeoutRetryAfter))
	case <-stream.Context().Done():
		if !r.remove(h) {
			return <-h.sent
		}
		a.metrics.canceled.WithLabelValues(c.key.environment, c.key.name).Inc()
		return nil
	}
}

func (a *Activator) route(key routeKey) *route {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.routes[key]
	if r == nil {
		r = &route{key: key, gauge: a.metrics.held.WithLabelValues(key.environment, key.name)}
		a.routes[key] = r
		a.metrics.initRoute(key)
	}
	return r
}

// held is one request waiting for its route.
type held struct {
	stream  extprocv3.ExternalProcessor_ProcessServer
	arrived time.Time
	// sent receives the result of sending CONTINUE, once the request is
	// released.
	sent chan error
}

// route is the FIFO of one route's held requests and its waker.
type route struct {
	key   routeKey
	gauge prometheus.Gauge

	mu    sync.Mutex
	queue []*held
	// stop ends the route's waker; nil when none runs.
	stop context.CancelFunc
}

// enqueue appends h, starting the waker with the first request; false when
// the queue is full.
func (r *route) enqueue(a *Activator, h *held) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) >= a.cfg.MaxHeld {
		return false
	}
	r.queue = append(r.queue, h)
	r.gauge.Set(float64(len(r.queue)))
	if r.stop == nil {
		ctx, stop := context.WithCancel(a.base)
		r.stop = stop
		go a.wake(ctx, r)
	}
	return true
}

// remove takes h out of the queue; false when it was released already. The
// waker stops with the last request: a model that nobody waits for any
// more is not kept awake.
func (r *route) remove(h *held) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, q := range r.queue {
		if q == h {
			r.queue = append(r.queue[:i], r.queue[i+1:]...)
			r.gauge.Set(float64(len(r.queue)))
			if len(r.queue) == 0 && r.stop != nil {
				r.stop()
				r.stop = nil
			}
			return true
		}
	}
	return false
}

// wake stamps the activation and renews it while requests are held, and
// releases them whenever the route is ready, until none is left.
func (a *Activator) wake(ctx context.Context, r *route) {
	log := a.cfg.Log.With("environment", r.key.environment, "route", r.key.name)
	log.Info("holding requests for a route without a ready endpoint; waking its target")
	namespace, name, _ := strings.Cut(r.key.name, "/")
	start := time.Now()
	told := make(chan time.Time, 1)
	go a.renew(ctx, log, namespace, name, r.key, told)
	first := true
	reported := false
	for {
		err := a.cfg.Ready(ctx, r.key.environment, r.key.name)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Warn("waiting for the route to be ready", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		ready := time.Now()
		done, rel := a.release(ctx, r)
		if first {
			first = false
			a.observeColdStart(r.key, start, told, ready, time.Now())
		}
		if rel.Held > 0 && !reported && a.cfg.Released != nil {
			reported = true
			rel.Ready = ready
			a.cfg.Released(rel)
		}
		if done {
			return
		}
	}
}

// observeColdStart records a wake's duration and stages; the wake stage is
// missing when the target was not told before the route got ready (it was
// woken by someone else, or is being scaled up anyway).
func (a *Activator) observeColdStart(key routeKey, start time.Time, told <-chan time.Time, ready, released time.Time) {
	env, route := key.environment, key.name
	a.metrics.coldStart.WithLabelValues(env, route).Observe(released.Sub(start).Seconds())
	readyFrom := start
	select {
	case t := <-told:
		if t.Before(ready) {
			a.metrics.stage.WithLabelValues(env, route, stageWake).Observe(t.Sub(start).Seconds())
			readyFrom = t
		}
	default:
	}
	a.metrics.stage.WithLabelValues(env, route, stageReady).Observe(ready.Sub(readyFrom).Seconds())
	a.metrics.stage.WithLabelValues(env, route, stageRelease).Observe(released.Sub(ready).Seconds())
}

// release answers CONTINUE to every held request in arrival order; done
// when none is left and the waker stopped.
func (a *Activator) release(ctx context.Context, r *route) (done bool, rel Release) {
	r.mu.Lock()
	batch := r.queue
	r.queue = nil
	r.gauge.Set(0)
	r.mu.Unlock()
	now := time.Now()
	for _, h := range batch {
		err := h.stream.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{},
		}})
		h.sent <- err
		a.metrics.released.WithLabelValues(r.key.environment, r.key.name).Inc()
		a.metrics.heldSeconds.WithLabelValues(r.key.environment, r.key.name).Observe(now.Sub(h.arrived).Seconds())
	}
	rel = Release{Environment: r.key.environment, Route: r.key.name, Released: now, Held: len(batch)}
	if len(batch) > 0 {
		rel.FirstHeld = batch[0].arrived
		a.cfg.Log.Info("route ready; released held requests", "environment", r.key.environment, "route", r.key.name,
			"released", len(batch), "longest_hold", now.Sub(batch[0].arrived).Round(time.Millisecond))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 || ctx.Err() != nil {
		return ctx.Err() != nil, rel
	}
	r.stop()
	r.stop = nil
	return true, rel
}

// renew stamps the activation now and every renew interval until ctx ends;
// a failed stamp is retried sooner. The time of the first stamp written
// goes to told.
func (a *Activator) renew(ctx context.Context, log *slog.Logger, namespace, name string, key routeKey, told chan<- time.Time) {
	first := true
	for {
		wait := a.cfg.RenewInterval
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.cfg.Wake(callCtx, namespace, name, time.Now())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.metrics.wakeErrors.WithLabelValues(key.environment, key.name).Inc()
			log.Warn("asking the controller to wake the target", "err", err)
			wait = min(wait, 500*time.Millisecond)
		default:
			a.metrics.wakes.WithLabelValues(key.environment, key.name).Inc()
			if first {
				first = false
				told <- time.Now()
			}
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
