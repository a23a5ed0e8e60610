// Package streaming_test measures what Nemesis adds to a token stream: the
// openai Python client streams completions from the text model directly and
// through Envoy (configured by Nemesis's control plane) and the sidecar, in
// the same run; it reports the time to first token of each and their
// difference, and the mean gap between tokens of each.
//
//	make bench   # or: go test -run '^$' -bench . -benchtime 1x ./bench/streaming
package streaming_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/dev/textmodel"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/sidecar"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
	"github.com/nemesis-ml/nemesis/xds"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

const (
	tokenDelay  = 20 * time.Millisecond
	tokens      = 16
	completions = 30
)

func BenchmarkTimeToFirstToken(b *testing.B) {
	model := startTextModel(b)
	pod := startSidecar(b, model)
	envoy := startEnvoy(b, pod)
	for range b.N {
		// Alternate the two so that the machine's load falls on both alike.
		var direct, through []run
		for range 3 {
			direct = append(direct, stream(b, model.String()+"/models/chat/v1", completions/3)...)
			through = append(through, stream(b, envoy+"/models/chat/v1", completions/3)...)
		}
		d, n := median(direct, ttft), median(through, ttft)
		dg, ng := median(direct, meanGap), median(through, meanGap)
		b.ReportMetric(n-d, "added-ttft-ms")
		b.ReportMetric(n/d, "ttft-ratio")
		b.ReportMetric(0, "ns/op") // the streamed completions are the measurement, not b.N
		b.Logf("%d completions of %d tokens (%v each) with the openai client: time to first token direct %.2f ms, through Envoy and the sidecar %.2f ms (+%.2f ms, ratio %.3f); mean gap between tokens %.2f ms direct, %.2f ms through",
			len(direct), tokens, tokenDelay, d, n, n-d, n/d, dg, ng)
	}
}

type run struct {
	Tokens []string  `json:"tokens"`
	TTFT   float64   `json:"ttft_ms"`
	Gaps   []float64 `json:"gaps_ms"`
}

func ttft(r run) float64 { return r.TTFT }

func meanGap(r run) float64 {
	sum := 0.0
	for _, g := range r.Gaps {
		sum += g
	}
	return sum / float64(len(r.Gaps))
}

func median(runs []run, f func(run) float64) float64 {
	v := make([]float64, 0, len(runs))
	for _, r := range runs {
		v = append(v, f(r))
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// stream runs tests/clients/openai_stream.py n times on one client.
func stream(b *testing.B, base string, n int) []run {
	root := testenv.RepoRoot(b)
	python := filepath.Join(root, ".tools", "venv", "bin", "python")
	out, err := exec.Command(python, filepath.Join(root, "tests", "clients", "openai_stream.py"),
		"--base-url", base, "--max-tokens", strconv.Itoa(tokens), "--repeat", strconv.Itoa(n)).Output()
	if err != nil {
		b.Fatalf("openai_stream.py on %s: %v (make tools installs the venv)", base, err)
	}
	var runs []run
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r run
		if strings.Contains(line, `"tokens"`) {
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				b.Fatal(err)
			}
			if len(r.Tokens) != tokens {
				b.Fatalf("%d tokens from %s", len(r.Tokens), base)
			}
			runs = append(runs, r)
		}
	}
	return runs
}

func startTextModel(b *testing.B) *url.URL {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.Port(b))
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go func() {
		_ = textmodel.Run(ctx, slog.New(slog.DiscardHandler), addr, textmodel.Config{Name: "ngram", TokenDelay: tokenDelay, BasePath: "/models/chat"})
	}()
	waitUp(b, "http://"+addr+"/ready")
	return &url.URL{Scheme: "http", Host: addr}
}

// startSidecar runs the sidecar as `nemesis sidecar` does, without a
// controller.
func startSidecar(b *testing.B, model *url.URL) ir.Endpoint {
	port := testenv.Port(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sidecar.Run(ctx, slog.New(slog.DiscardHandler), sidecar.Config{
			Mode: sidecar.ModeProxy, Listen: fmt.Sprintf("127.0.0.1:%d", port), AdminListen: fmt.Sprintf("127.0.0.1:%d", testenv.Port(b)),
			Model: model, ModelProtocol: "auto", Namespace: "bench", Pod: "chat-0",
			PushInterval: time.Second, ShutdownGrace: 5 * time.Second,
			Meter: meter.Config{Source: meter.SourceProcesses, PID: os.Getpid()},
		})
	}()
	b.Cleanup(func() { cancel(); <-done })
	return ir.Endpoint{Address: "127.0.0.1", Port: uint32(port)}
}

// defaults is a settings reader without a database: every environment runs
// with the built-in defaults.
type defaults struct{}

func (defaults) Current(_ context.Context, env string) (settings.Settings, error) {
	return settings.Defaults(env), nil
}

func (defaults) All(context.Context) (map[string]settings.Settings, error) { return nil, nil }

// startEnvoy runs the control plane and an Envoy on the project's bootstrap
// routing /models/chat to pod, and returns Envoy's base URL.
func startEnvoy(b *testing.B, pod ir.Endpoint) string {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	port := testenv.Port(b)
	env := fmt.Sprintf("bench-%d", port)
	cp := xds.New(slog.New(slog.DiscardHandler), defaults{}, translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: uint32(port)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = cp.Server.Serve(ctx, l) }()
	cp.RoutesChanged(ctx, map[string][]ir.Route{env: {{Name: "bench/chat", PathPrefix: "/models/chat", Endpoints: []ir.Endpoint{pod}}}})
	testenv.ProjectEnvoy(b, l.Addr().String(), servers.EnvoyConfig{NodeID: "envoy-0", Cluster: env, LogLevel: "warn"})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitUp(b, base+"/models/chat/v1/models")
	return base
}

func waitUp(b *testing.B, u string) {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get(u)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not up: %v", u, err)
		}
	}
}
