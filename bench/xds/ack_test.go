// Package xds_test measures how long a settings change takes to be applied
// by every Envoy, against the floor of publishing a snapshot directly.
package xds_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/api"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/settingsdb"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

const updates = 200

// BenchmarkSettingsToAck: PUT /loadbalancer/settings?wait=ack (validate,
// insert and notify in PostgreSQL, translate, publish, wait for every
// Envoy's ACK) beside SetSnapshot + wait for ACKs alone, with 1 and 10
// Envoys connected.
func BenchmarkSettingsToAck(b *testing.B) {
	for range b.N {
		for _, envoys := range []int{1, 10} {
			full, floor := measure(b, envoys)
			fmt.Printf("%2d envoys  PUT→all ACKed  p50 %7.2f ms  p99 %7.2f ms | SetSnapshot→all ACKed p50 %7.2f ms  p99 %7.2f ms | p99 ratio %.2f\n",
				envoys, ms(pct(full, 50)), ms(pct(full, 99)), ms(pct(floor, 50)), ms(pct(floor, 99)),
				float64(pct(full, 99))/float64(pct(floor, 99)))
		}
	}
}

// BenchmarkSettingsToAckMTLS: the same PUT→every Envoy ACKed with the gRPC
// port on mutual TLS (as serve runs it) beside the same run without TLS.
func BenchmarkSettingsToAckMTLS(b *testing.B) {
	for range b.N {
		for _, envoys := range []int{1, 10} {
			plain, _ := measure(b, envoys)
			secure, _ := measureWith(b, envoys, true)
			fmt.Printf("%2d envoys  PUT→all ACKed  mTLS p50 %7.2f ms  p99 %7.2f ms | plain p50 %7.2f ms  p99 %7.2f ms | p99 ratio mTLS/plain %.2f\n",
				envoys, ms(pct(secure, 50)), ms(pct(secure, 99)), ms(pct(plain, 50)), ms(pct(plain, 99)),
				float64(pct(secure, 99))/float64(pct(plain, 99)))
		}
	}
}

func measure(b *testing.B, envoys int) (full, floor []time.Duration) {
	return measureWith(b, envoys, false)
}

// measureWith runs the PUTs and the floor with the gRPC port on mutual TLS
// when mtls is true.
func measureWith(b *testing.B, envoys int, mtls bool) (full, floor []time.Duration) {
	_, url := testenv.Database(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := database.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	log := slog.New(slog.DiscardHandler)
	store := settingsdb.NewStore(pool)
	opts := translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: uint32(testenv.Port(b))}
	cp := xds.New(log, store, opts)
	go settingsdb.Watch(ctx, pool, log, func(env string) error { return cp.SettingsChanged(ctx, env) })
	xdsListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	env := "bench"
	tlsDir := ""
	if mtls {
		certs := testenv.Certificates(b, env)
		serving, err := pki.NewServerTLS(filepath.Join(certs.Dir, pki.ServeDir), log)
		if err != nil {
			b.Fatal(err)
		}
		tlsDir = filepath.Join(certs.Dir, pki.EnvoyDir(env))
		go func() { _ = cp.Server.ServeTLS(ctx, xdsListener, serving.Config()) }()
	} else {
		go func() { _ = cp.Server.Serve(ctx, xdsListener) }()
	}
	mux := http.NewServeMux()
	h, err := api.New(log, store, cp, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for i := range envoys {
		testenv.ProjectEnvoy(b, xdsListener.Addr().String(), servers.EnvoyConfig{
			NodeID: fmt.Sprintf("envoy-%d", i), Cluster: env, LogLevel: "warn", TLSDir: tlsDir,
		})
	}

	policies := []string{"round_robin", "least_connections", "random"}
	for i := range updates {
		body := fmt.Sprintf(`{"environment":%q,"policy":%q,"max_connections":%d,"timeout_seconds":30}`, env, policies[i%3], 100+i)
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/loadbalancer/settings?wait=ack", strings.NewReader(body))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("PUT: %d", resp.StatusCode)
		}
		full = append(full, time.Since(start))
	}

	for i := range updates {
		m := ir.Environment{Name: env, Settings: settings.Settings{
			Environment: env, Policy: settings.Policy(policies[i%3]), MaxConnections: 100 + i, TimeoutSeconds: 30,
			RetryAttempts: 2, RetryBudgetPercent: 20, StreamIdleTimeoutSeconds: 300,
		}}
		version := fmt.Sprintf("floor.%d", i)
		start := time.Now()
		res, err := translate.Translate(m, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := cp.Server.SetSnapshot(ctx, env, version, res); err != nil {
			b.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		acked, err := cp.Server.WaitAcked(waitCtx, env, func(v string) bool { return v == version })
		cancel()
		if err != nil || len(acked) != envoys {
			b.Fatalf("floor: %d acked: %v", len(acked), err)
		}
		floor = append(floor, time.Since(start))
	}
	return full, floor
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
