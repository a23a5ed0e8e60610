package activator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nemesis-ml/nemesis/extproc/holdmeta"
)

// fixture is an activator on a real gRPC server, with a route that becomes
// ready when ready is closed.
type fixture struct {
	t      *testing.T
	a      *Activator
	client extprocv3.ExternalProcessorClient
	ready  chan struct{}
	wakes  atomic.Int64
	woken  chan string
	// releases are what Config.Released heard.
	releases chan Release
	// hold is the hold timeout of the one published route,
	// production's ml/resnet.
	hold atomic.Int64
}

func newFixture(t *testing.T, maxHeld int) *fixture {
	f := &fixture{t: t, ready: make(chan struct{}), woken: make(chan string, 100), releases: make(chan Release, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.a = New(ctx, Config{
		MaxHeld: maxHeld, RenewInterval: 50 * time.Millisecond, Registerer: prometheus.NewRegistry(),
		Log: slog.New(slog.DiscardHandler),
		Route: func(environment, name string) (time.Duration, bool) {
			return time.Duration(f.hold.Load()), environment == "production" && name == "ml/resnet"
		},
		Ready: func(ctx context.Context, _, _ string) error {
			select {
			case <-f.ready:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		Wake: func(_ context.Context, namespace, name string, _ time.Time) error {
			f.wakes.Add(1)
			f.woken <- namespace + "/" + name
			return nil
		},
		Released: func(r Release) { f.releases <- r },
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	f.a.Register(srv)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f.client = extprocv3.NewExternalProcessorClient(conn)
	return f
}

// send opens one request's stream for ml/resnet, whose hold timeout is
// holdSeconds, as Envoy does, and returns the answer.
func (f *fixture) send(ctx context.Context, holdSeconds int) (*extprocv3.ProcessingResponse, error) {
	f.hold.Store(int64(time.Duration(holdSeconds) * time.Second))
	return f.sendFor(ctx, "production", "ml/resnet")
}

// sendFor opens one request's stream with the route and environment
// metadata given.
func (f *fixture) sendFor(ctx context.Context, environment, route string) (*extprocv3.ProcessingResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, holdmeta.Route, route, holdmeta.Environment, environment)
	stream, err := f.client.Process(ctx)
	if err != nil {
		return nil, err
	}
	// A stream the server refused at once may already be closed: Send then
	// says io.EOF, and Recv has the server's status.
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{},
	}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	_ = stream.CloseSend()
	return resp, err
}

func (f *fixture) held() int {
	return int(testutil.ToFloat64(f.a.metrics.held.WithLabelValues("production", "ml/resnet")))
}

func (f *fixture) waitHeld(n int) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.held() != n {
		if time.Now().After(deadline) {
			f.t.Fatalf("%d held, want %d", f.held(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rejection503(t *testing.T, resp *extprocv3.ProcessingResponse, reason string) {
	t.Helper()
	ir := resp.GetImmediateResponse()
	if ir == nil || ir.GetStatus().GetCode() != 503 {
		t.Fatalf("answer %v, want an immediate 503", resp)
	}
	var body rejection
	if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body.Reason != reason || body.Route != "ml/resnet" || body.Error == "" {
		t.Fatalf("body %s (%v), want reason %s", ir.GetBody(), err, reason)
	}
	headers := map[string]string{}
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		headers[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	if headers["retry-after"] == "" || headers["content-type"] != "application/json" {
		t.Fatalf("headers %v, want Retry-After and JSON", headers)
	}
}

func TestHeldRequestsContinueOnceReadyAndTheWakerStops(t *testing.T) {
	f := newFixture(t, 10)
	var wg sync.WaitGroup
	answers := make([]*extprocv3.ProcessingResponse, 5)
	for i := range answers {
		wg.Go(func() {
			resp, err := f.send(t.Context(), 30)
			if err != nil {
				t.Error(err)
			}
			answers[i] = resp
		})
	}
	start := time.Now()
	f.waitHeld(5)
	if got := f.a.Held(); len(got) != 1 || got["ml/resnet"] != 5 {
		t.Errorf("held now %v, want ml/resnet: 5", got)
	}
	if got := <-f.woken; got != "ml/resnet" {
		t.Fatalf("woke %q", got)
	}
	close(f.ready)
	wg.Wait()
	rel := <-f.releases
	if rel.Route != "ml/resnet" || rel.Environment != "production" || rel.Held != 5 || rel.FirstHeld.Before(start) ||
		rel.Ready.Before(rel.FirstHeld) || rel.Released.Before(rel.Ready) || time.Now().Before(rel.Released) {
		t.Errorf("release %+v: want 5 held, stages in order after %s", rel, start)
	}
	for _, a := range answers {
		if a.GetRequestHeaders() == nil {
			t.Fatalf("answer %v, want CONTINUE", a)
		}
	}
	if got := testutil.ToFloat64(f.a.metrics.released.WithLabelValues("production", "ml/resnet")); got != 5 || f.held() != 0 {
		t.Errorf("released %v, held %d; want 5 and 0", got, f.held())
	}
	if got := f.a.Held(); len(got) != 0 {
		t.Errorf("held now %v after the release, want none", got)
	}
	f.noMoreStamps(t, "after the release") // no request is left
}

func TestFullQueueRejectsAtOnceAndHoldTimesOut(t *testing.T) {
	f := newFixture(t, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			start := time.Now()
			resp, err := f.send(t.Context(), 1)
			if err != nil {
				t.Error(err)
				return
			}
			rejection503(t, resp, reasonTimeout)
			if took := time.Since(start); took < time.Second {
				t.Errorf("timed out after %s, want the 1 s hold", took)
			}
		})
	}
	f.waitHeld(2)
	start := time.Now()
	resp, err := f.send(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	rejection503(t, resp, reasonQueueFull)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("queue_full took %s", took)
	}
	wg.Wait()
	if f.held() != 0 {
		t.Errorf("%d still held", f.held())
	}
	f.noMoreStamps(t, "with nothing held") // a model nobody waits for is not kept awake
}

func TestClientGoneLeavesTheQueue(t *testing.T) {
	f := newFixture(t, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = f.send(ctx, 30)
	}()
	f.waitHeld(1)
	cancel()
	<-done
	f.waitHeld(0)
	if got := testutil.ToFloat64(f.a.metrics.canceled.WithLabelValues("production", "ml/resnet")); got != 1 {
		t.Errorf("canceled %v, want 1", got)
	}
}

func TestMissingMetadataIsRefused(t *testing.T) {
	f := newFixture(t, 10)
	stream, err := f.client.Process(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}})
	if _, err := stream.Recv(); err == nil {
		t.Fatal("a stream without the route's metadata was accepted")
	}
}

// A route the control plane did not publish for the environment is refused
// at once and leaves no route entry, goroutine or series behind.
func TestUnknownRouteIsRefusedAndLeavesNothing(t *testing.T) {
	f := newFixture(t, 10)
	// The first stream opens the connection and its goroutines.
	if _, err := f.sendFor(t.Context(), "production", ""); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no route: %v, want InvalidArgument", err)
	}
	before := runtime.NumGoroutine()
	for _, c := range []struct{ environment, route string }{
		{"production", "victims/model"}, // not published
		{"staging", "ml/resnet"},        // published, but for another environment
	} {
		_, err := f.sendFor(t.Context(), c.environment, c.route)
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s in %s: %v, want PermissionDenied", c.route, c.environment, err)
		}
	}
	f.a.mu.Lock()
	entries := len(f.a.routes)
	f.a.mu.Unlock()
	if entries != 0 {
		t.Fatalf("%d route entries after refused streams", entries)
	}
	if n := testutil.CollectAndCount(f.a.metrics.held); n != 0 {
		t.Fatalf("%d held series after refused streams", n)
	}
	if got := testutil.ToFloat64(f.a.metrics.rejected.WithLabelValues("", "", reasonRefused)); got != 3 {
		t.Fatalf("refused counted %v times, want 3", got)
	}
	if f.wakes.Load() != 0 {
		t.Fatal("a refused route was woken")
	}
	// The gRPC server's stream goroutines end with the streams.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before the refused streams", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recordingStream is one request's stream that records the order of the
// answers sent on all of them.
type recordingStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	ctx   context.Context
	id    int
	mu    *sync.Mutex
	order *[]int
}

func (s *recordingStream) Context() context.Context { return s.ctx }

func (s *recordingStream) Send(*extprocv3.ProcessingResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.order = append(*s.order, s.id)
	return nil
}

func TestReleaseIsInArrivalOrder(t *testing.T) {
	f := newFixture(t, 100)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	c := call{key: routeKey{environment: "production", name: "ml/resnet"}, hold: 30 * time.Second}
	for i := range 20 {
		s := &recordingStream{ctx: t.Context(), id: i, mu: &mu, order: &order}
		wg.Go(func() {
			if err := f.a.hold(s, c); err != nil {
				t.Error(err)
			}
		})
		f.waitHeld(i + 1)
	}
	close(f.ready)
	wg.Wait()
	for i, id := range order {
		if id != i {
			t.Fatalf("released in order %v, want arrival order", order)
		}
	}
	if len(order) != 20 {
		t.Fatalf("%d released, want 20", len(order))
	}
}

// noMoreStamps checks that the activation stamps have stopped.
func (f *fixture) noMoreStamps(t *testing.T, when string) {
	t.Helper()
	before := f.wakes.Load()
	time.Sleep(200 * time.Millisecond)
	if after := f.wakes.Load(); after != before {
		t.Errorf("stamps went on %s: %d → %d", when, before, after)
	}
}
