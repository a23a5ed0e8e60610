package xds_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nemesis-ml/nemesis/internal/testing/adsclient"
	"github.com/nemesis-ml/nemesis/internal/testing/fakesettings"
	"github.com/nemesis-ml/nemesis/internal/testing/fixture"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// logBuffer collects the control plane's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines(containing ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, line := range strings.Split(b.buf.String(), "\n") {
		for _, c := range containing {
			if !strings.Contains(line, c) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

type harness struct {
	t     *testing.T
	cp    *xds.ControlPlane
	store *fakesettings.Store
	log   *logBuffer
	addr  string
}

// start runs a control plane on a fake settings store, its ADS server on
// 127.0.0.1:0.
func start(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, store: fakesettings.New(), log: &logBuffer{}}
	h.cp = xds.New(slog.New(slog.NewTextHandler(h.log, nil)), h.store,
		translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.cp.Server.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("control plane log:\n%s", strings.Join(h.log.lines(), "\n"))
		}
	})
	return h
}

// envoy connects an Envoy of env subscribed to clusters and ACKs the
// configuration it gets first; each environment has at most one.
func (h *harness) envoy(node, env string) *adsclient.Client {
	h.t.Helper()
	c := adsclient.Dial(h.t, h.addr, node, env)
	c.Subscribe(resource.ClusterType, "")
	resp := c.Recv()
	c.Ack(resp)
	// Return once the server has recorded the ACK, so what the test checks
	// next does not race it.
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second)
	defer cancel()
	if _, err := h.cp.Server.WaitAcked(ctx, env, func(v string) bool { return v == resp.GetVersionInfo() }); err != nil {
		h.t.Fatalf("%s never recorded as ACKing %s: %v", node, resp.GetVersionInfo(), err)
	}
	return c
}

func (h *harness) insert(s settings.Settings) settings.Settings {
	h.t.Helper()
	stored, err := h.store.Insert(context.Background(), s)
	if err != nil {
		h.t.Fatal(err)
	}
	return stored
}

// clusters are the clusters of a CDS response by name.
func clusters(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string]*clusterv3.Cluster {
	t.Helper()
	out := map[string]*clusterv3.Cluster{}
	for _, a := range resp.GetResources() {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		out[c.GetName()] = &c
	}
	return out
}

func clusterNames(m map[string]*clusterv3.Cluster) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func TestVersionIsTheSettingsVersionOfASnapshot(t *testing.T) {
	for in, want := range map[string]int64{"7.12": 7, "0.3": 0, "15": 15, "": 0, "x.1": 0} {
		if got := xds.Version(in); got != want {
			t.Errorf("Version(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestAnEnvoyOfAnUnconfiguredEnvironmentGetsItsDefaults(t *testing.T) {
	h := start(t)
	c := adsclient.Dial(t, h.addr, "envoy-a", "fresh")
	c.Subscribe(resource.ClusterType, "")
	if resp := c.Recv(); xds.Version(resp.GetVersionInfo()) != 0 || len(resp.GetResources()) != 0 {
		t.Errorf("first configuration: version %q with %d clusters, want the defaults (0.n) and none", resp.GetVersionInfo(), len(resp.GetResources()))
	}
}

func TestRoutesAndSettingsChangesPublishAndEqualInputsDoNot(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	envoy := h.envoy("envoy-a", "prod")

	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a").WithEndpoint("10.0.0.2", 8080).WithEndpoint("10.0.0.1", 8080), fixture.NewRoute("ml/b"))})
	resp := envoy.Recv()
	got := clusters(t, resp)
	if len(got) != 2 || got["ml/a"] == nil || got["ml/b"] == nil || got["ml/a"].GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		t.Fatalf("after the routes changed: clusters %s (%v), want ml/a and ml/b, round robin", clusterNames(got), got["ml/a"].GetLbPolicy())
	}
	envoy.Ack(resp)
	afterRoutes := resp.GetVersionInfo()

	stored := h.insert(settings.Settings{Environment: "prod", Policy: settings.Random, MaxConnections: 5, TimeoutSeconds: 7})
	if err := h.cp.SettingsChanged(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	resp = envoy.Recv()
	got = clusters(t, resp)
	if xds.Version(resp.GetVersionInfo()) != stored.Version || got["ml/a"].GetLbPolicy() != clusterv3.Cluster_RANDOM ||
		got["ml/a"].GetCircuitBreakers().GetThresholds()[0].GetMaxConnections().GetValue() != 5 {
		t.Fatalf("after the settings changed: version %s, ml/a %v", resp.GetVersionInfo(), got["ml/a"])
	}
	envoy.Ack(resp)
	afterSettings := resp.GetVersionInfo()
	if afterSettings == afterRoutes {
		t.Fatalf("two publications share version %s", afterSettings)
	}

	// Nothing changed: the same settings version, the same routes in
	// another order with their endpoints shuffled, an unknown environment
	// with no settings of its own.
	if err := h.cp.SettingsChanged(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/b"), fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080).WithEndpoint("10.0.0.2", 8080))})

	// The next publication is the next in sequence: nothing came between.
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080))})
	resp = envoy.Recv()
	if got := clusters(t, resp); len(got) != 1 || got["ml/a"] == nil {
		t.Fatalf("after ml/b went: clusters %s, want ml/a", clusterNames(got))
	}
	if want := next(t, afterSettings); resp.GetVersionInfo() != want {
		t.Errorf("version after equal inputs then a change = %s, want %s: equal inputs published", resp.GetVersionInfo(), want)
	}
	envoy.Ack(resp)

	// An environment whose routes all went is rebuilt without them.
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{})
	if got := clusters(t, envoy.Recv()); len(got) != 0 {
		t.Errorf("after every route went: clusters %s, want none", clusterNames(got))
	}
}

// next is the snapshot version published right after v with the same settings.
func next(t *testing.T, v string) string {
	t.Helper()
	settingsVersion, seq, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(seq)
	if err != nil {
		t.Fatalf("version %q has no sequence number", v)
	}
	return settingsVersion + "." + strconv.Itoa(n+1)
}

func TestInvalidRoutesAreSkippedAndReported(t *testing.T) {
	h := start(t)
	envoy := h.envoy("envoy-a", "prod")

	h.cp.RoutesChanged(t.Context(), map[string][]ir.Route{"prod": fixture.Routes(
		fixture.NewRoute("ml/good").WithPathPrefix("/models/shared").WithEndpoint("10.0.0.1", 8080),
		fixture.NewRoute("ml/later").WithPathPrefix("/models/shared").WithEndpoint("10.0.0.2", 8080),
		fixture.NewRoute("no-namespace"),
		fixture.NewRoute("ml/spaced").WithPathPrefix("/models/a b"),
	)})
	if got := clusters(t, envoy.Recv()); len(got) != 1 || got["ml/good"] == nil {
		t.Errorf("published clusters %s, want ml/good only", clusterNames(got))
	}
	for name, reason := range map[string]string{
		"ml/later":     "taken by ml/good",
		"no-namespace": "not namespace/name",
		"ml/spaced":    "pathPrefix",
	} {
		if len(h.log.lines(`msg="route skipped"`, "customautoscaler="+name, reason)) != 1 {
			t.Errorf("no log line reports %s skipped for %q", name, reason)
		}
	}
}

func TestASettingsChangeThatCannotBeTranslatedKeepsTheLastConfiguration(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	envoy := h.envoy("envoy-a", "prod")
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080))})
	envoy.Ack(envoy.Recv())

	h.insert(settings.Settings{Environment: "prod", Policy: "fastest", MaxConnections: 5, TimeoutSeconds: 7})
	if err := h.cp.SettingsChanged(ctx, "prod"); err == nil || !strings.Contains(err.Error(), `"prod"`) || !strings.Contains(err.Error(), "policy") {
		t.Fatalf("SettingsChanged with an unknown policy: %v, want an error naming prod and the policy", err)
	}
	good := h.insert(settings.Settings{Environment: "prod", Policy: settings.LeastConnections, MaxConnections: 5, TimeoutSeconds: 7})
	if err := h.cp.SettingsChanged(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	// The Envoy's next configuration is the good one: the bad one never
	// reached it.
	resp := envoy.Recv()
	if xds.Version(resp.GetVersionInfo()) != good.Version || clusters(t, resp)["ml/a"].GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST {
		t.Errorf("next configuration is version %s, want %d with least request", resp.GetVersionInfo(), good.Version)
	}
}

func TestSettingsChangedReadsAllEnvironmentsOrFails(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	prod, staging := h.envoy("envoy-prod", "prod"), h.envoy("envoy-staging", "staging")
	p := h.insert(settings.Settings{Environment: "prod", Policy: settings.Random, MaxConnections: 5, TimeoutSeconds: 7})
	s := h.insert(settings.Settings{Environment: "staging", Policy: settings.Random, MaxConnections: 5, TimeoutSeconds: 7})
	if err := h.cp.SettingsChanged(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if v := xds.Version(prod.Recv().GetVersionInfo()); v != p.Version {
		t.Errorf("prod got settings version %d, want %d", v, p.Version)
	}
	if v := xds.Version(staging.Recv().GetVersionInfo()); v != s.Version {
		t.Errorf("staging got settings version %d, want %d", v, s.Version)
	}

	down := errors.New("connection refused")
	h.store.Fail(down)
	for _, env := range []string{"", "prod"} {
		if err := h.cp.SettingsChanged(ctx, env); !errors.Is(err, down) {
			t.Errorf("SettingsChanged(%q) with the store down: %v, want its error", env, err)
		}
	}
}

func TestWaitReadyWaitsForAnEndpointAndItsAck(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	envoy := h.envoy("envoy-a", "prod")
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a"))})
	envoy.Ack(envoy.Recv())

	ready := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ready <- h.cp.WaitReady(wctx, "prod", "ml/a")
	}()
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080))})
	resp := envoy.Recv()
	select {
	case err := <-ready:
		t.Fatalf("WaitReady returned before the Envoy ACKed the endpoint: %v", err)
	default:
	}
	envoy.Ack(resp)
	if err := <-ready; err != nil {
		t.Fatalf("WaitReady: %v", err)
	}

	// Without an endpoint it waits until the context ends.
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a"))})
	envoy.Ack(envoy.Recv())
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := h.cp.WaitReady(wctx, "prod", "ml/a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady without an endpoint: %v, want the deadline", err)
	}
}

func TestWaitReadyFailsWhenTheEnvoyRejectsTheEndpoint(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	envoy := h.envoy("envoy-a", "prod")
	h.cp.RoutesChanged(ctx, map[string][]ir.Route{"prod": fixture.Routes(fixture.NewRoute("ml/a").WithEndpoint("10.0.0.1", 8080))})
	envoy.Nack(envoy.Recv(), "no such cluster")

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var nack *server.NackError
	if err := h.cp.WaitReady(wctx, "prod", "ml/a"); !errors.As(err, &nack) || nack.Nack.Message != "no such cluster" {
		t.Errorf("WaitReady after a NACK: %v, want the NACK", err)
	}
}

func TestAnEnvoyOfAnInvalidEnvironmentGetsNothing(t *testing.T) {
	h := start(t)
	c := adsclient.Dial(t, h.addr, "envoy-a", "Not_Valid")
	c.Subscribe(resource.ClusterType, "")
	deadline := time.Now().Add(10 * time.Second)
	for len(h.log.lines("envoy asked for an invalid environment", "environment=Not_Valid")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no warning about the invalid environment")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h.cp.Server.HasSnapshot("Not_Valid") {
		t.Error("an invalid environment got a configuration")
	}
}

// Hold answers for the routes published for an environment only, with the
// route's own hold timeout, else the options', capped.
func TestHoldIsTheRouteTablesAnswer(t *testing.T) {
	cp := xds.New(slog.New(slog.DiscardHandler), fakesettings.New(),
		translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000, HoldTimeout: 75 * time.Second})
	cp.RoutesChanged(t.Context(), map[string][]ir.Route{"prod": fixture.Routes(
		fixture.NewRoute("ml/own").WithPathPrefix("/models/own").WithHoldTimeout(30),
		fixture.NewRoute("ml/default").WithPathPrefix("/models/default"),
		fixture.NewRoute("ml/long").WithPathPrefix("/models/long").WithHoldTimeout(3600),
	)})
	for _, c := range []struct {
		env, route string
		hold       time.Duration
		ok         bool
	}{
		{"prod", "ml/own", 30 * time.Second, true},
		{"prod", "ml/default", 75 * time.Second, true},
		{"prod", "ml/long", translate.MaxHoldTimeout, true},
		{"prod", "ml/unknown", 0, false},
		{"staging", "ml/own", 0, false},
	} {
		if hold, ok := cp.Hold(c.env, c.route); hold != c.hold || ok != c.ok {
			t.Errorf("Hold(%s, %s) = %s, %v; want %s, %v", c.env, c.route, hold, ok, c.hold, c.ok)
		}
	}
}
