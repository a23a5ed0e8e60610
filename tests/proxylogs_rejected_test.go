package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// loneEnvoyBootstrap is an Envoy that answers every request itself and
// streams its access log to nemesis serve, showing the client pair in
// TLS_DIR; it needs no xDS, so it can name an environment the control plane
// would never configure.
const loneEnvoyBootstrap = `
static_resources:
  listeners:
    - name: lone
      address: {socket_address: {address: 127.0.0.1, port_value: %d}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: lone
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          direct_response: {status: 200, body: {inline_string: lone}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
                access_log:
                  - name: envoy.access_loggers.http_grpc
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
                      common_config:
                        log_name: nemesis
                        transport_api_version: V3
                        grpc_service: {envoy_grpc: {cluster_name: nemesis}}
  clusters:
    - name: nemesis
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {http2_protocol_options: {}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: nemesis
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
              - certificate_chain: {filename: TLS_DIR/tls.crt}
                private_key: {filename: TLS_DIR/tls.key}
            validation_context:
              trusted_ca: {filename: TLS_DIR/ca.crt}
      load_assignment:
        cluster_name: nemesis
        endpoints:
          - lb_endpoints:
              - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`

// startLoneEnvoy starts an Envoy of environment cluster, with that
// environment's client pair, on loneEnvoyBootstrap and returns its base URL.
func (s *stack) startLoneEnvoy(cluster string) string {
	s.t.Helper()
	port := testenv.Port(s.t)
	host, xdsPort, _ := strings.Cut(s.xdsAddr, ":")
	dir := testenv.Dir(s.t, "lone-envoy")
	bootstrap := filepath.Join(dir, "bootstrap.yaml")
	config := strings.ReplaceAll(loneEnvoyBootstrap, "TLS_DIR", s.tls.Client(s.t, cluster))
	if err := os.WriteFile(bootstrap, fmt.Appendf(nil, config, port, host, xdsPort), 0o644); err != nil {
		s.t.Fatal(err)
	}
	testenv.Envoy(s.t, servers.EnvoyConfig{Bootstrap: bootstrap, Dir: dir, NodeID: "lone", Cluster: cluster})
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// getN sends n GETs of base+path(i) and fails on any answer but 200.
func getN(t *testing.T, base string, n int, path func(i int) string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range n {
		code, body, err := get(c, base+path(i))
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", path(i), code, body, err)
		}
	}
}

// rejectedCounts reads proxy_logs_rejected: rows by reason, and whether
// every database rejection carries PostgreSQL's error.
func (s *stack) rejectedCounts() map[string]int {
	s.t.Helper()
	conn, err := pgx.Connect(s.t.Context(), s.dbURL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = conn.Close(s.t.Context()) }()
	rows, err := conn.Query(s.t.Context(), `SELECT reason, error, row_data->>'target_url' FROM proxy_logs_rejected`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var reason, msg, url string
		if err := rows.Scan(&reason, &msg, &url); err != nil {
			s.t.Fatal(err)
		}
		switch {
		case reason == logsink.ReasonDatabase && (!strings.Contains(msg, "e2e_refused") || !strings.Contains(url, "/refused/")):
			s.t.Fatalf("database rejection of %s: %q, want PostgreSQL's check violation", url, msg)
		case reason == logsink.ReasonEnvironment && !strings.Contains(msg, "more than 50"):
			s.t.Fatalf("environment rejection of %s: %q", url, msg)
		}
		out[reason]++
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// waitProxyLogs waits until the good rows and the rejected ones are all in,
// then checks that every good request is there exactly once.
func (s *stack) waitProxyLogs(good int, rejected map[string]int) {
	s.t.Helper()
	testenv.Eventually(s.t, 60*time.Second, fmt.Sprintf("%d rows and %v rejected", good, rejected), func() error {
		total, distinct := s.countLogs("true")
		got := s.rejectedCounts()
		if total < good || fmt.Sprint(got) != fmt.Sprint(rejected) {
			return fmt.Errorf("%d rows (%d distinct URLs), rejected %v", total, distinct, got)
		}
		return nil
	})
	time.Sleep(time.Second)
	if total, distinct := s.countLogs("true"); total != good || distinct != good {
		s.t.Fatalf("proxy_logs has %d rows for %d distinct URLs, want %d of each", total, distinct, good)
	}
}

func TestProxyLogsRowsPostgresRefusesGoAsideAndNothingIsStuck(t *testing.T) {
	s := newStack(t, "--proxy-log-flush-interval", "200ms", "--proxy-log-batch-size", "100")
	// PostgreSQL itself refuses the rows of /refused/ paths, past every
	// check of the sink's own.
	testenv.Exec(t, s.dbURL, `ALTER TABLE proxy_logs ADD CONSTRAINT e2e_refused CHECK (target_url NOT LIKE '%/refused/%')`)
	backends := startStatusBackends(t, testenv.NewHost(t), "a", "b")
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", s.envoyPort)
	// An Envoy whose environment is longer than proxy_logs.environment's
	// VARCHAR(50): every row it logs would fail the COPY of its batch.
	lone := s.startLoneEnvoy(strings.Repeat("long-environment-", 4))

	done := make(chan struct{})
	go func() {
		defer close(done)
		getN(t, lone, 40, func(i int) string { return fmt.Sprintf("/lone/%d", i) })
		getN(t, base, 20, func(i int) string { return fmt.Sprintf("/models/demo/refused/%d/200", i) })
	}()
	sendAll(t, base, 0, 600, 4)
	<-done
	want := map[string]int{logsink.ReasonEnvironment: 40, logsink.ReasonDatabase: 20}
	s.waitProxyLogs(600, want)
	for reason, n := range want {
		if got := s.metric(`nemesis_proxy_logs_rows_rejected_total{reason="` + reason + `"}`); got != float64(n) {
			t.Fatalf("rejected{reason=%s} = %v, want %d", reason, got, n)
		}
	}

	// Stopped with a spilled batch waiting that holds rows of both kinds.
	if err := s.serve.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	spillDir := s.serveArgs[1]
	b := struct {
		ID   uuid.UUID     `json:"id"`
		Rows []logsink.Row `json:"rows"`
	}{ID: uuid.New()}
	for i := range 13 {
		r := logsink.Row{
			Timestamp: time.Now().UTC(), ClientIP: netip.MustParseAddr("10.9.9.9"), Method: "GET", Status: 200,
			TargetURL: fmt.Sprintf("http://spilled/%d", i), Environment: s.env, RequestID: "spilled-" + strconv.Itoa(i),
		}
		switch i {
		case 10, 11:
			r.TargetURL = fmt.Sprintf("http://spilled/refused/%d", i)
		case 12:
			r.Environment = strings.Repeat("e", 51)
		}
		b.Rows = append(b.Rows, r)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%020d-%s-%d.json", time.Now().UnixNano(), b.ID, len(b.Rows))
	if err := os.WriteFile(filepath.Join(spillDir, name), raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s.startServe()
	s.waitConnected(1)
	sendAll(t, base, 600, 200, 4)
	getN(t, lone, 10, func(i int) string { return fmt.Sprintf("/lone/after/%d", i) })
	want = map[string]int{logsink.ReasonEnvironment: 40 + 10 + 1, logsink.ReasonDatabase: 20 + 2}
	s.waitProxyLogs(600+200+10, want)
	if left, _ := os.ReadDir(spillDir); len(left) != 0 {
		t.Fatalf("the spill folder still holds %v", left)
	}
	if got := s.metric("nemesis_proxy_logs_rows_pending"); got != 0 {
		t.Fatalf("%v rows still pending after the restart", got)
	}
}
