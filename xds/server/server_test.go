package server_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/nemesis-ml/nemesis/internal/testing/adsclient"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// harness is a server on 127.0.0.1:0, stopped when the test ends, and the
// environments it was asked to build.
type harness struct {
	t    *testing.T
	srv  *server.Server
	addr string
	// asked receives each environment the server asks to be built.
	asked chan string
}

func start(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, asked: make(chan string, 16)}
	h.srv = server.New(slog.New(slog.DiscardHandler), func(env string) { h.asked <- env })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return h
}

// publish sets a snapshot of env with one route, ml/demo.
func (h *harness) publish(env, version string) {
	h.t.Helper()
	e := ir.Environment{Name: env, Settings: settings.Defaults(env), Routes: []ir.Route{{
		Name: "ml/demo", PathPrefix: "/models/demo", Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: 8080}},
	}}}
	res, err := translate.Translate(e, translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.srv.SetSnapshot(context.Background(), env, version, res); err != nil {
		h.t.Fatal(err)
	}
}

// waitStatus waits until the server's status of the environment's Envoys
// satisfies ok.
func (h *harness) waitStatus(env string, ok func([]server.EnvoyStatus) bool) []server.EnvoyStatus {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var mine []server.EnvoyStatus
		for _, st := range h.srv.Status() {
			if st.Environment == env {
				mine = append(mine, st)
			}
		}
		if ok(mine) {
			return mine
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("status of %q never settled; last: %+v", env, mine)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func is(version string) func(string) bool { return func(v string) bool { return v == version } }

func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestEnvironmentIsTheNodeClusterOrDefault(t *testing.T) {
	for name, tc := range map[string]struct {
		node *corev3.Node
		want string
	}{
		"no node":       {nil, "default"},
		"no cluster":    {&corev3.Node{Id: "envoy-1"}, "default"},
		"named cluster": {&corev3.Node{Id: "envoy-1", Cluster: "production"}, "production"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := server.Environment(tc.node); got != tc.want {
				t.Errorf("Environment = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAckIsRecordedAndCompletesWaitAcked(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	resp := envoy.Recv()
	if resp.GetVersionInfo() != "1.1" || len(resp.GetResources()) != 1 {
		t.Fatalf("first response: version %q with %d clusters, want 1.1 with 1", resp.GetVersionInfo(), len(resp.GetResources()))
	}

	// Before the ACK the Envoy is pending.
	if got, err := h.srv.WaitAcked(waitCtx(t, 50*time.Millisecond), "prod", is("1.1")); err == nil {
		t.Fatalf("WaitAcked returned %+v before any ACK", got)
	}

	acked := make(chan error, 1)
	var envoys []server.EnvoyStatus
	go func() {
		var err error
		envoys, err = h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("1.1"))
		acked <- err
	}()
	envoy.Ack(resp)
	if err := <-acked; err != nil {
		t.Fatalf("WaitAcked after ACK: %v", err)
	}
	if len(envoys) != 1 || envoys[0].Node != "envoy-a" || envoys[0].AckedVersion != "1.1" || envoys[0].LastNack != nil {
		t.Fatalf("WaitAcked returned %+v, want envoy-a at 1.1 without a NACK", envoys)
	}
	if len(h.asked) != 0 {
		t.Errorf("an environment with a snapshot was asked to be built: %s", <-h.asked)
	}
}

func TestNackIsRecordedWithItsDetailAndFailsWaitAcked(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	envoy.Ack(envoy.Recv())
	if _, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("1.1")); err != nil {
		t.Fatal(err)
	}

	h.publish("prod", "2.2")
	resp := envoy.Recv()
	envoy.Nack(resp, "cluster ml/demo: invalid lb policy")

	_, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("2.2"))
	var nack *server.NackError
	if !errors.As(err, &nack) {
		t.Fatalf("WaitAcked after a NACK: %v, want a *server.NackError", err)
	}
	want := server.Nack{Version: "2.2", TypeURL: resource.ClusterType, Message: "cluster ml/demo: invalid lb policy"}
	if got := nack.Nack; nack.Node != "envoy-a" || got.Version != want.Version || got.TypeURL != want.TypeURL || got.Message != want.Message {
		t.Errorf("NackError = %s %+v, want envoy-a %+v", nack.Node, got, want)
	}
	// The Envoy still runs what it ACKed before, and its status says so.
	st := h.waitStatus("prod", func(s []server.EnvoyStatus) bool { return len(s) == 1 && s[0].LastNack != nil })[0]
	if st.AckedVersion != "1.1" || st.LastNack.Version != "2.2" || st.LastNack.Message != want.Message || st.LastNack.At.IsZero() {
		t.Errorf("status after NACK = %+v (last NACK %+v), want acked 1.1 and the NACK of 2.2", st, st.LastNack)
	}
	// A NACK of an older version does not fail a wait for a newer one.
	if _, err := h.srv.WaitAcked(waitCtx(t, 50*time.Millisecond), "prod", is("3.3")); errors.As(err, &nack) {
		t.Errorf("waiting for 3.3 failed on the NACK of 2.2: %v", err)
	}
}

func TestWaitAckedTimesOutWithThePendingEnvoys(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	envoy.Recv() // and never answer it

	pending, err := h.srv.WaitAcked(waitCtx(t, 100*time.Millisecond), "prod", is("1.1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitAcked without an ACK: %v, want the context's deadline", err)
	}
	if len(pending) != 1 || pending[0].Node != "envoy-a" || pending[0].AckedVersion != "" {
		t.Errorf("pending = %+v, want envoy-a with nothing acked", pending)
	}
}

func TestWaitAckedCountsOnlyTheEnvironmentsEnvoys(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	h.publish("staging", "1.2")
	stuck := adsclient.Dial(t, h.addr, "envoy-staging", "staging")
	stuck.Subscribe(resource.ClusterType, "")
	stuck.Recv()
	envoy := adsclient.Dial(t, h.addr, "envoy-prod", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	envoy.Ack(envoy.Recv())

	envoys, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("1.1"))
	if err != nil || len(envoys) != 1 || envoys[0].Node != "envoy-prod" {
		t.Fatalf("WaitAcked(prod) = %+v, %v; want envoy-prod only", envoys, err)
	}
	// No Envoy connected: nothing to wait for.
	if envoys, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "nobody", is("1.1")); err != nil || len(envoys) != 0 {
		t.Errorf("WaitAcked(nobody) = %+v, %v; want nothing at once", envoys, err)
	}
}

func TestEveryTypeMustAckTheVersion(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	envoy.Subscribe(resource.ListenerType, "")
	first, second := envoy.Recv(), envoy.Recv()
	envoy.Ack(first)
	if got, err := h.srv.WaitAcked(waitCtx(t, 50*time.Millisecond), "prod", is("1.1")); err == nil {
		t.Fatalf("WaitAcked returned %+v with one of two types ACKed", got)
	}
	envoy.Ack(second)
	if _, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("1.1")); err != nil {
		t.Fatalf("WaitAcked with both types ACKed: %v", err)
	}
}

func TestReconnectingEnvoyIsTrackedAnew(t *testing.T) {
	h := start(t)
	h.publish("prod", "1.1")
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	envoy.Subscribe(resource.ClusterType, "")
	envoy.Ack(envoy.Recv())
	h.waitStatus("prod", func(s []server.EnvoyStatus) bool { return len(s) == 1 && s[0].AckedVersion == "1.1" })

	// A waiter for a version the Envoy never gets ends when it goes away:
	// WaitAcked counts the Envoys connected, not the ones that were.
	waited := make(chan error, 1)
	go func() {
		_, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("2.2"))
		waited <- err
	}()
	envoy.Close()
	if err := <-waited; err != nil {
		t.Fatalf("WaitAcked after the only Envoy left: %v", err)
	}
	h.waitStatus("prod", func(s []server.EnvoyStatus) bool { return len(s) == 0 })

	// Envoy reconnects saying which version it runs; the server records it
	// before anything new is sent, and serves what changed meanwhile.
	h.publish("prod", "2.2")
	again := adsclient.Dial(t, h.addr, "envoy-a", "prod")
	again.Subscribe(resource.ClusterType, "1.1")
	st := h.waitStatus("prod", func(s []server.EnvoyStatus) bool { return len(s) == 1 })[0]
	if st.Node != "envoy-a" || st.LastNack != nil {
		t.Errorf("status after reconnect = %+v", st)
	}
	resp := again.Recv()
	if resp.GetVersionInfo() != "2.2" {
		t.Fatalf("after reconnect got version %q, want 2.2", resp.GetVersionInfo())
	}
	again.Ack(resp)
	if _, err := h.srv.WaitAcked(waitCtx(t, 10*time.Second), "prod", is("2.2")); err != nil {
		t.Fatal(err)
	}
}

func TestFirstEnvoyOfAnEnvironmentWithoutSnapshotAsksForOne(t *testing.T) {
	h := start(t)
	envoy := adsclient.Dial(t, h.addr, "envoy-a", "fresh")
	envoy.Subscribe(resource.ClusterType, "")
	select {
	case env := <-h.asked:
		if env != "fresh" {
			t.Fatalf("asked to build %q, want fresh", env)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server never asked for a snapshot of fresh")
	}
	// The snapshot built then reaches the waiting Envoy.
	h.publish("fresh", "0.1")
	if resp := envoy.Recv(); resp.GetVersionInfo() != "0.1" {
		t.Errorf("got version %q, want 0.1", resp.GetVersionInfo())
	}
}

func TestInconsistentSnapshotIsRefused(t *testing.T) {
	h := start(t)
	res := translate.Resources{resource.ListenerType: {}, resource.RouteType: {}, resource.ClusterType: {}, resource.EndpointType: {}}
	e := ir.Environment{Name: "prod", Settings: settings.Defaults("prod")}
	full, err := translate.Translate(e, translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000})
	if err != nil {
		t.Fatal(err)
	}
	// A listener whose route configuration is missing.
	res[resource.ListenerType] = full[resource.ListenerType]
	if err := h.srv.SetSnapshot(context.Background(), "prod", "1.1", res); err == nil {
		t.Fatal("SetSnapshot accepted a listener without its routes")
	}
	if h.srv.HasSnapshot("prod") {
		t.Error("the refused snapshot was stored")
	}
}
