package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// serve runs h on a loopback port until the test ends and returns its URL.
func serve(t *testing.T, srv *http.Server) *url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &url.URL{Scheme: "http", Host: l.Addr().String()}
}

// startProxy puts a sidecar proxy in front of model and returns the proxy
// and its URL.
func startProxy(t *testing.T, model *url.URL, protocol string) (*Proxy, *url.URL) {
	t.Helper()
	p, err := New(Config{Model: model, Protocol: protocol, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return p, serve(t, NewServer(p, slog.Default()))
}

// client leaves bodies as they come: no transparent gzip.
var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}

func TestAnswersPassThroughUnchanged(t *testing.T) {
	body := make([]byte, 1<<20)
	_, _ = rand.Read(body)
	var gotReq struct {
		sync.Mutex
		method, query, host, header string
		body                        []byte
	}
	model := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotReq.Lock()
		gotReq.method, gotReq.query, gotReq.host, gotReq.header, gotReq.body = r.Method, r.URL.RawQuery, r.Host, r.Header.Get("X-Request-Id"), b
		gotReq.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Encoding", "gzip") // must not be decoded on the way
		w.Header()["X-Model-Version"] = []string{"3", "4"}
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})})
	_, px := startProxy(t, model, ProtocolAuto)

	fetch := func(base *url.URL) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, base.String()+"/v1/models/resnet:predict?top=5", bytes.NewReader(body[:4096]))
		req.Host = "resnet.models.example"
		req.Header.Set("X-Request-Id", "abc")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	direct, proxied := fetch(model), fetch(px)
	directBody, _ := io.ReadAll(direct.Body)
	proxiedBody, err := io.ReadAll(proxied.Body)
	if err != nil {
		t.Fatal(err)
	}
	if proxied.StatusCode != direct.StatusCode {
		t.Fatalf("status %d through the sidecar, %d direct", proxied.StatusCode, direct.StatusCode)
	}
	for _, h := range []string{"Content-Type", "Content-Encoding", "Content-Length", "X-Model-Version", "Set-Cookie"} {
		if d, p := strings.Join(direct.Header.Values(h), ","), strings.Join(proxied.Header.Values(h), ","); d != p {
			t.Errorf("header %s: %q through the sidecar, %q direct", h, p, d)
		}
	}
	if !bytes.Equal(proxiedBody, directBody) || !bytes.Equal(proxiedBody, body) {
		t.Errorf("body differs: %d bytes through the sidecar, %d direct", len(proxiedBody), len(directBody))
	}
	gotReq.Lock()
	defer gotReq.Unlock()
	if gotReq.method != http.MethodPost || gotReq.query != "top=5" || gotReq.host != "resnet.models.example" ||
		gotReq.header != "abc" || !bytes.Equal(gotReq.body, body[:4096]) {
		t.Errorf("model got %s ?%s host %q id %q and %d body bytes", gotReq.method, gotReq.query, gotReq.host, gotReq.header, len(gotReq.body))
	}
}

func TestStreamedChunksArriveAsTheyAreSent(t *testing.T) {
	for _, contentType := range []string{"text/event-stream", "application/x-ndjson"} {
		t.Run(contentType, func(t *testing.T) { testStream(t, contentType) })
	}
}

// testStream has the model send the next event only once the client has
// read the previous one through the sidecar: a proxy that buffered would
// stall the stream until the client timed out.
func testStream(t *testing.T, contentType string) {
	const events = 5
	next := make(chan struct{})
	model := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType) // no Content-Length: chunked
		rc := http.NewResponseController(w)
		for i := range events {
			if i > 0 {
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: token %d\n\n", i)
			_ = rc.Flush()
		}
	})})
	p, px := startProxy(t, model, ProtocolAuto)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, px.String()+"/stream", nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var arrivals []time.Duration
	for i := range events {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d did not arrive: %v", i, err)
		}
		_, _ = r.ReadString('\n')
		arrivals = append(arrivals, time.Since(start))
		if want := fmt.Sprintf("data: token %d\n", i); line != want {
			t.Fatalf("event %d = %q, want %q", i, line, want)
		}
		if i < events-1 {
			time.Sleep(100 * time.Millisecond)
			next <- struct{}{}
		}
	}
	t.Logf("events arrived at %v", arrivals)
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	// The stream's first byte left long before its last.
	w := waitForRequests(t, p, 1)
	if w.ResponseTime < 400*time.Millisecond {
		t.Fatalf("time to last byte %v, want at least the 4 × 100 ms the client paused", w.ResponseTime)
	}
	if ttfb := histogramSum(t, p.metrics.firstByte); ttfb > 0.3 {
		t.Fatalf("time to first byte %.3fs, want well before the last byte", ttfb)
	}
}

func TestGRPCCallOverH2C(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("resnet", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	_, px := startProxy(t, &url.URL{Scheme: "http", Host: l.Addr().String()}, ProtocolAuto)

	conn, err := grpc.NewClient(px.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "resnet"})
	if err != nil || got.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check(resnet) = %v, %v; want SERVING", got, err)
	}
	// The status code travels in HTTP/2 trailers.
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "absent"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check(absent) = %v, want NotFound", err)
	}
	// A server stream: each update must arrive while the stream is open.
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "resnet"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
		msg, err := watch.Recv()
		if err != nil || msg.Status != want {
			t.Fatalf("Watch got %v, %v; want %v", msg, err, want)
		}
		hs.SetServingStatus("resnet", healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

func TestAverageResponseTimeIsTheModelsDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	model := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		_, _ = w.Write([]byte("ok"))
	})})
	p, px := startProxy(t, model, ProtocolAuto)
	const requests = 20
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range requests / 4 {
				resp, err := client.Get(px.String())
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	w := waitForRequests(t, p, requests)
	if w.Requests != requests || w.Errors != 0 {
		t.Fatalf("window has %d requests and %d errors, want %d and 0", w.Requests, w.Errors, requests)
	}
	avg := w.ResponseTime / time.Duration(w.Requests)
	if avg < delay || avg > delay*110/100 {
		t.Fatalf("average response time %v, want within 10%% of the model's %v", avg, delay)
	}
	if w := p.Take(); w.Requests != 0 || w.ResponseTime != 0 {
		t.Fatalf("a second Take saw %+v, want an empty window", w)
	}
}

func TestCountsErrorsAndInFlightRequests(t *testing.T) {
	release := make(chan struct{})
	model := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "model crashed", http.StatusInternalServerError)
		case "/slow":
			<-release
		case "/broken":
			w.Header().Set("Content-Length", "100")
			_, _ = w.Write([]byte("partial"))
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // the model dies mid-answer
		}
	})})
	p, px := startProxy(t, model, ProtocolAuto)

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			resp, err := client.Get(px.String() + "/slow")
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Take().InFlight != 3 {
		if time.Now().After(deadline) {
			t.Fatal("in-flight never reached 3")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	wg.Wait()

	resp, err := client.Get(px.String() + "/fail")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("/fail answered %d, want 500", resp.StatusCode)
	}
	// The client sees the connection break, before or after the headers
	// depending on what was buffered; the sidecar must count an error.
	// A POST, which Go's client does not retry on a broken connection.
	if resp, err := client.Post(px.String()+"/broken", "text/plain", nil); err == nil {
		if _, err := io.Copy(io.Discard, resp.Body); err == nil {
			t.Fatal("a broken-off answer arrived whole")
		}
		resp.Body.Close()
	}
	w := waitForRequests(t, p, 5)
	if w.Errors != 2 || w.InFlight != 0 {
		t.Fatalf("window %+v, want 5 requests, 2 errors, none in flight", w)
	}

	// A model that is not listening: 502, counted as an error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // nothing listens there now
	down, _ := New(Config{Model: &url.URL{Scheme: "http", Host: l.Addr().String()}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	pxDown := serve(t, NewServer(down, slog.Default()))
	resp, err = client.Get(pxDown.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unreachable model answered %d, want 502", resp.StatusCode)
	}
	if w := waitForRequests(t, down, 1); w.Errors != 1 {
		t.Fatalf("unreachable model: window %+v, want 1 error", w)
	}
}

// waitForRequests takes windows until n requests completed in total: the
// proxy records a request just after its last byte reached the client.
func waitForRequests(t *testing.T, p *Proxy, n int) Window {
	t.Helper()
	var sum Window
	deadline := time.Now().Add(5 * time.Second)
	for sum.Requests < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests recorded", sum.Requests, n)
		}
		w := p.Take()
		sum.Requests += w.Requests
		sum.Errors += w.Errors
		sum.ResponseTime += w.ResponseTime
		sum.InFlight = w.InFlight
		time.Sleep(10 * time.Millisecond)
	}
	return sum
}

func histogramSum(t *testing.T, h prometheus.Histogram) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs[0].Metric[0].Histogram.GetSampleSum()
}

// A model that starts its answer before the request body has ended still
// gets all of the body, and the client all of the answer: the proxy keeps
// forwarding the request while it writes the response (HTTP/1.1 full
// duplex), as a token stream or an echoing upload needs.
func TestAnswerMayStartBeforeTheRequestEnds(t *testing.T) {
	model := serve(t, &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		_, _ = io.WriteString(w, "started\n")
		_ = rc.Flush()
		n, err := io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprintf(w, "%d %v\n", n, err)
	})})
	_, proxied := startProxy(t, model, ProtocolAuto)

	body, send := io.Pipe()
	headers := make(chan struct{})
	waited := make(chan bool, 1)
	go func() {
		_, _ = send.Write(bytes.Repeat([]byte("a"), 1024))
		// The rest once the answer has begun (without full duplex it
		// never does: the proxy's server waits for the body's end).
		select {
		case <-headers:
			waited <- false
		case <-time.After(2 * time.Second):
			waited <- true
		}
		_, _ = send.Write(bytes.Repeat([]byte("b"), 1024))
		_ = send.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, proxied.String()+"/upload", body)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	close(headers)
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != "started\n2048 <nil>\n" {
		t.Fatalf("answer %q (%v), want the model to have read all 2048 bytes", got, err)
	}
	if <-waited {
		t.Fatal("the answer's headers reached the client only after the request's body ended")
	}
}
