package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/testing/adsclient"
	"github.com/nemesis-ml/nemesis/internal/testing/fakesettings"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/api"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// The operators' token (settings-write and read) and a read-only one.
const (
	token     = "s3cret"
	readToken = "r3ader"
)

type harness struct {
	t       *testing.T
	store   *fakesettings.Store
	cp      *xds.ControlPlane
	url     string
	xdsAddr string
}

// start serves the API as serve does (behind the token check), on a fake
// store and a real control plane whose ADS server listens on 127.0.0.1:0.
func start(t *testing.T) *harness {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	h := &harness{t: t, store: fakesettings.New()}
	h.cp = xds.New(log, h.store, translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.xdsAddr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.cp.Server.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	mux := http.NewServeMux()
	handler, err := api.New(log, h.store, h.cp, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handler.Register(mux)
	auth := &httpauth.Authorizer{}
	if err := auth.Grant([]string{token}, httpauth.SettingsWrite, httpauth.Read); err != nil {
		t.Fatal(err)
	}
	if err := auth.Grant([]string{readToken}, httpauth.Read); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Guarded(auth, mux))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// call sends a request with the token and returns the status and body.
func (h *harness) call(method, path, body string) (int, []byte) {
	h.t.Helper()
	return h.callAs(token, method, path, body)
}

func (h *harness) callAs(bearer, method, path, body string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, out
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return v
}

type putAnswer struct {
	settings.Settings
	AckedBy []struct{ Node string } `json:"acked_by"`
	Pending []struct{ Node string } `json:"pending"`
	Error   string                  `json:"error"`
}

// envoy connects an Envoy of env subscribed to clusters, with its first
// configuration ACKed; each environment has at most one.
func (h *harness) envoy(node, env string) *adsclient.Client {
	h.t.Helper()
	c := adsclient.Dial(h.t, h.xdsAddr, node, env)
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

func TestGetReturnsTheDefaultsThenTheStoredSettings(t *testing.T) {
	h := start(t)
	code, body := h.callAs(readToken, http.MethodGet, "/loadbalancer/settings", "")
	if got := decode[settings.Settings](t, body); code != http.StatusOK || got != settings.Defaults("default") {
		t.Fatalf("GET before any PUT = %d %+v, want 200 and the defaults", code, got)
	}
	code, body = h.call(http.MethodPut, "/loadbalancer/settings",
		`{"environment":"prod","policy":"random","max_connections":5,"timeout_seconds":7}`)
	put := decode[putAnswer](t, body)
	if code != http.StatusOK || put.Version != 1 || put.Policy != settings.Random || put.Environment != "prod" {
		t.Fatalf("PUT = %d %s", code, body)
	}
	code, body = h.callAs(readToken, http.MethodGet, "/loadbalancer/settings?environment=prod", "")
	if got := decode[settings.Settings](t, body); code != http.StatusOK || got.Version != 1 || got.MaxConnections != 5 || got.TimeoutSeconds != 7 || got.Default {
		t.Errorf("GET after PUT = %d %s", code, body)
	}
}

func TestPutWithoutEnvironmentSetsTheDefaultOneAndPublishes(t *testing.T) {
	h := start(t)
	envoy := h.envoy("envoy-a", "default")
	code, body := h.call(http.MethodPut, "/loadbalancer/settings", `{"policy":"least_connections","max_connections":5,"timeout_seconds":7}`)
	if code != http.StatusOK || decode[putAnswer](t, body).Environment != "default" {
		t.Fatalf("PUT = %d %s", code, body)
	}
	// Applied at once, without waiting for a notification.
	if v := xds.Version(envoy.Recv().GetVersionInfo()); v != 1 {
		t.Errorf("the Envoy got settings version %d, want 1", v)
	}
}

func TestHistoryIsNewestFirstAndLimited(t *testing.T) {
	h := start(t)
	for _, policy := range []string{"round_robin", "random", "least_connections"} {
		if code, body := h.call(http.MethodPut, "/loadbalancer/settings",
			`{"environment":"prod","policy":"`+policy+`","max_connections":5,"timeout_seconds":7}`); code != http.StatusOK {
			t.Fatalf("PUT %s = %d %s", policy, code, body)
		}
	}
	code, body := h.callAs(readToken, http.MethodGet, "/loadbalancer/settings/history?environment=prod&limit=2", "")
	list := decode[[]settings.Settings](t, body)
	if code != http.StatusOK || len(list) != 2 || list[0].Policy != settings.LeastConnections || list[1].Policy != settings.Random {
		t.Errorf("history = %d %s, want least_connections then random", code, body)
	}
	code, body = h.callAs(readToken, http.MethodGet, "/loadbalancer/settings/history?environment=staging", "")
	if list := decode[[]settings.Settings](t, body); code != http.StatusOK || len(list) != 0 {
		t.Errorf("history of an unconfigured environment = %d %s, want 200 and []", code, body)
	}
}

func TestPutWaitAck(t *testing.T) {
	const body = `{"environment":"prod","policy":"random","max_connections":5,"timeout_seconds":7}`
	t.Run("every Envoy ACKs", func(t *testing.T) {
		h := start(t)
		envoy := h.envoy("envoy-a", "prod")
		go func() { envoy.Ack(envoy.Recv()) }()
		code, out := h.call(http.MethodPut, "/loadbalancer/settings?wait=ack&timeout=10s", body)
		got := decode[putAnswer](t, out)
		if code != http.StatusOK || len(got.AckedBy) != 1 || got.AckedBy[0].Node != "envoy-a" {
			t.Errorf("PUT ?wait=ack = %d %s, want 200 acked by envoy-a", code, out)
		}
	})
	t.Run("an Envoy NACKs", func(t *testing.T) {
		h := start(t)
		envoy := h.envoy("envoy-a", "prod")
		go func() { envoy.Nack(envoy.Recv(), "bad cluster") }()
		code, out := h.call(http.MethodPut, "/loadbalancer/settings?wait=ack&timeout=10s", body)
		got := decode[putAnswer](t, out)
		if code != http.StatusBadGateway || got.Version != 1 || !strings.Contains(got.Error, "stored, but") || !strings.Contains(got.Error, "bad cluster") {
			t.Errorf("PUT ?wait=ack with a NACK = %d %s, want 502 naming the NACK", code, out)
		}
	})
	t.Run("an Envoy never answers", func(t *testing.T) {
		h := start(t)
		envoy := h.envoy("envoy-a", "prod")
		code, out := h.call(http.MethodPut, "/loadbalancer/settings?wait=ack&timeout=100ms", body)
		got := decode[putAnswer](t, out)
		if code != http.StatusGatewayTimeout || got.Version != 1 || len(got.Pending) != 1 || got.Pending[0].Node != "envoy-a" {
			t.Errorf("PUT ?wait=ack without an ACK = %d %s, want 504 with envoy-a pending", code, out)
		}
		envoy.Recv()
	})
}

func TestStatusListsTheEnvoysByEnvironment(t *testing.T) {
	h := start(t)
	h.envoy("envoy-a", "prod")
	h.envoy("envoy-b", "staging")
	code, body := h.callAs(readToken, http.MethodGet, "/loadbalancer/status", "")
	got := decode[struct {
		Environments map[string][]struct {
			Node         string `json:"node"`
			AckedVersion string `json:"acked_version"`
		} `json:"environments"`
	}](t, body)
	if code != http.StatusOK || len(got.Environments) != 2 || got.Environments["prod"][0].Node != "envoy-a" ||
		got.Environments["staging"][0].Node != "envoy-b" || got.Environments["prod"][0].AckedVersion == "" {
		t.Errorf("status = %d %s", code, body)
	}
}

func TestBadRequestsNameTheFieldAndChangeNothing(t *testing.T) {
	const valid = `"policy":"random","max_connections":5,"timeout_seconds":7`
	for name, tc := range map[string]struct {
		method, path, body string
		field              string
	}{
		"environment of GET":     {"GET", "/loadbalancer/settings?environment=Prod_1", "", "environment"},
		"environment of history": {"GET", "/loadbalancer/settings/history?environment=" + strings.Repeat("a", 51), "", "environment"},
		"limit zero":             {"GET", "/loadbalancer/settings/history?limit=0", "", "limit"},
		"limit too large":        {"GET", "/loadbalancer/settings/history?limit=1001", "", "limit"},
		"limit not a number":     {"GET", "/loadbalancer/settings/history?limit=ten", "", "limit"},
		"environment of PUT":     {"PUT", "/loadbalancer/settings", `{"environment":"Prod",` + valid + `}`, "environment"},
		"policy missing":         {"PUT", "/loadbalancer/settings", `{"max_connections":5,"timeout_seconds":7}`, "policy"},
		"policy unknown":         {"PUT", "/loadbalancer/settings", `{"policy":"fastest","max_connections":5,"timeout_seconds":7}`, "policy"},
		"max_connections missing": {"PUT", "/loadbalancer/settings", `{"policy":"random","timeout_seconds":7}`,
			"max_connections"},
		"max_connections zero": {"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":0,"timeout_seconds":7}`,
			"max_connections"},
		"max_connections a string": {"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":"5","timeout_seconds":7}`,
			"max_connections"},
		"timeout_seconds missing": {"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":5}`,
			"timeout_seconds"},
		"timeout_seconds too long": {"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":5,"timeout_seconds":3601}`,
			"timeout_seconds"},
		"unknown field":        {"PUT", "/loadbalancer/settings", `{` + valid + `,"weight":3}`, "weight"},
		"wait not ack":         {"PUT", "/loadbalancer/settings?wait=yes", `{` + valid + `}`, "wait"},
		"timeout not duration": {"PUT", "/loadbalancer/settings?wait=ack&timeout=soon", `{` + valid + `}`, "timeout"},
		"timeout too long":     {"PUT", "/loadbalancer/settings?wait=ack&timeout=3m", `{` + valid + `}`, "timeout"},
		"environment empty":    {"GET", "/loadbalancer/settings?environment=", "", "environment"},
		"history env empty":    {"GET", "/loadbalancer/settings/history?environment=", "", "environment"},
		"limit empty":          {"GET", "/loadbalancer/settings/history?limit=", "", "limit"},
		"wait empty":           {"PUT", "/loadbalancer/settings?wait=", `{` + valid + `}`, "wait"},
		"timeout two units":    {"PUT", "/loadbalancer/settings?wait=ack&timeout=1m30s", `{` + valid + `}`, "timeout"},
		"environment null":     {"PUT", "/loadbalancer/settings", `{"environment":null,` + valid + `}`, "environment"},
		"max_connections null": {"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":null,"timeout_seconds":7}`, "max_connections"},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t)
			code, body := h.call(tc.method, tc.path, tc.body)
			got := decode[httpjson.Error](t, body)
			if code != http.StatusBadRequest || got.Field != tc.field || !strings.HasPrefix(got.Error, tc.field+": ") {
				t.Errorf("%s %s = %d %s, want 400 naming %s", tc.method, tc.path, code, body, tc.field)
			}
			if rows := h.store.Rows(); len(rows) != 0 {
				t.Errorf("a refused request stored %+v", rows)
			}
		})
	}
}

func TestMalformedBodiesAreRefused(t *testing.T) {
	for name, body := range map[string]string{
		"empty":        "",
		"not JSON":     "policy=random",
		"two values":   `{"policy":"random","max_connections":5,"timeout_seconds":7} {}`,
		"too large":    `{"policy":"` + strings.Repeat("r", 17<<10) + `"}`,
		"not a object": `[1,2]`,
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t)
			code, out := h.call(http.MethodPut, "/loadbalancer/settings", body)
			if code != http.StatusBadRequest || decode[httpjson.Error](t, out).Error == "" {
				t.Errorf("PUT %s = %d %s, want 400 with an error", name, code, out)
			}
			if rows := h.store.Rows(); len(rows) != 0 {
				t.Errorf("a refused request stored %+v", rows)
			}
		})
	}
}

func TestPutWithoutTheTokenIsUnauthorized(t *testing.T) {
	h := start(t)
	const body = `{"policy":"random","max_connections":5,"timeout_seconds":7}`
	for name, bearer := range map[string]string{"no token": "", "wrong token": "guess"} {
		code, out := h.callAs(bearer, http.MethodPut, "/loadbalancer/settings", body)
		if got := decode[httpjson.Error](t, out); code != http.StatusUnauthorized || got.Field != "Authorization" {
			t.Errorf("%s: PUT = %d %s, want 401 naming Authorization", name, code, out)
		}
	}
	code, out := h.callAs(readToken, http.MethodPut, "/loadbalancer/settings", body)
	if got := decode[httpjson.Error](t, out); code != http.StatusForbidden || got.Field != "Authorization" {
		t.Errorf("read token: PUT = %d %s, want 403 naming Authorization", code, out)
	}
	for _, path := range []string{"/loadbalancer/settings", "/loadbalancer/settings/history", "/loadbalancer/status"} {
		if code, out := h.callAs("", http.MethodGet, path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token = %d %s, want 401", path, code, out)
		}
	}
	if rows := h.store.Rows(); len(rows) != 0 {
		t.Errorf("an unauthorized PUT stored %+v", rows)
	}
}

func TestDatabaseDownIs503(t *testing.T) {
	h := start(t)
	h.store.Fail(errors.New("connection refused"))
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/loadbalancer/settings", ""},
		{"GET", "/loadbalancer/settings/history", ""},
		{"PUT", "/loadbalancer/settings", `{"policy":"random","max_connections":5,"timeout_seconds":7}`},
	} {
		code, out := h.call(c.method, c.path, c.body)
		if code != http.StatusServiceUnavailable || !strings.Contains(decode[httpjson.Error](t, out).Error, "connection refused") {
			t.Errorf("%s %s with the database down = %d %s, want 503 saying why", c.method, c.path, code, out)
		}
	}
}
