package proxylogs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nemesis-ml/nemesis/bench/internal/cpu"
	"github.com/nemesis-ml/nemesis/bench/internal/loadgen"
	"github.com/nemesis-ml/nemesis/extproc/logship"
	"github.com/nemesis-ml/nemesis/internal/accesslogfile"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// modelEnv makes the test binary a stand-in model listening on its value:
// BenchmarkEnvoyLoggers runs the model as a process of its own, on the
// core of Envoy and the load.
const modelEnv = "NEMESIS_BENCH_MODEL_ADDR"

// BenchmarkEnvoyLoggers: what each of Envoy's access loggers costs Envoy
// itself. Envoy (one worker), wrk and the model share CPU 0; the receiver
// of the entries, which throws them away, runs on CPU 1, as serve and
// PostgreSQL run on other nodes than Envoy in a cluster. Off; Envoy's gRPC
// access log as Nemesis configures it by default; Nemesis' file mode
// (serve --access-log-file: Envoy's file logger writing accesslogfile
// records, and nemesis logship, on CPU 1 like a container of its own,
// shipping them to the receiver); Envoy's file access log with the fields
// as one text line and nothing reading it; and Envoy's OpenTelemetry access log
// sending that line over gRPC (what the gRPC path costs apart from the
// entry's fields): throughput against off in the same round, and Envoy's
// CPU per request.
func BenchmarkEnvoyLoggers(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs: one for Envoy, one for the receiver")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatalf("wrk not found (make tools installs it): %v", err)
	}
	restore, err := cpu.Pin(os.Getpid(), 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(restore)
	model := startModelProcess(b)
	receiver := startDiscardingReceiver(b)
	dir := testenv.Dir(b, "loggers")
	loggers := []string{"off", "grpc", "shipped", "file", "otel"}
	var envoys []*servers.Process
	var urls []string
	var shipped func() float64
	for _, l := range loggers {
		p, url, s := startStaticEnvoy(b, dir, l, model, receiver)
		envoys, urls = append(envoys, p), append(urls, url)
		if s != nil {
			shipped = s
		}
	}
	const loggerRounds = 7
	for range b.N {
		var sent float64 // requests to the shipped Envoy, about
		ratios := make([][]float64, len(loggers))
		perRequest := make([][]float64, len(loggers))
		for range loggerRounds {
			var off float64
			for i := range loggers {
				pid := envoys[i].PID()
				before, start := cpu.Of(pid), time.Now()
				r := loadgen.RunOn(b, wrk, 0, urls[i], connections, duration)
				if loggers[i] == "shipped" {
					sent += r.RPS * time.Since(start).Seconds()
				}
				used := cpu.Of(pid) - before
				if i == 0 {
					off = r.RPS
				}
				ratios[i] = append(ratios[i], r.RPS/off)
				perRequest[i] = append(perRequest[i], float64(used.Microseconds())/(r.RPS*time.Since(start).Seconds()))
			}
		}
		b.Logf("Envoy with one worker, wrk and the model on CPU 0, the receiver on CPU 1; median of %d interleaved rounds of %s, wrk -t1 -c%d:", loggerRounds, duration, connections)
		for i, l := range loggers {
			b.Logf("  %-5s throughput against off %.3f, Envoy CPU per request %.1f µs", l, median(ratios[i]), median(perRequest[i]))
		}
		time.Sleep(time.Second) // the last flush and ship
		b.Logf("  the shipper delivered %.0f entries of about %.0f requests", shipped(), sent)
		for i, l := range loggers[1:] {
			b.ReportMetric(median(ratios[i+1]), l+"-throughput-ratio")
		}
		b.ReportMetric(0, "ns/op")
	}
}

// fileFormat is what a row and the pod traffic take from an entry, as one
// line of Envoy's file access log.
const fileFormat = "%START_TIME(%s.%6f)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:METHOD)% %REQ(:SCHEME)% %REQ(:AUTHORITY)% " +
	"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %UPSTREAM_HOST% %ROUTE_NAME% " +
	"%COMMON_DURATION(US_TX_BEG:US_RX_END:us)% %REQ(X-REQUEST-ID)%\n"

// startStaticEnvoy runs Envoy with one worker on CPU 0, from a static
// configuration routing to model with logger: off, grpc, file or otel.
// shipped, for "shipped", counts the entries the shipper delivered.
func startStaticEnvoy(b *testing.B, dir, logger string, model, receiver string) (p *servers.Process, url string, shipped func() float64) {
	port, adminPort := testenv.Port(b), testenv.Port(b)
	var accessLog string
	switch logger {
	case "grpc":
		accessLog = fmt.Sprintf(`
          access_log:
          - name: envoy.access_loggers.http_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
              common_config:
                log_name: %s
                transport_api_version: V3
                buffer_size_bytes: %d
                buffer_flush_interval: %.3fs
                grpc_service: {envoy_grpc: {cluster_name: receiver}}`,
			translate.AccessLogName, translate.AccessLogBufferBytes, translate.AccessLogFlushInterval.Seconds())
	case "otel":
		accessLog = fmt.Sprintf(`
          access_log:
          - name: envoy.access_loggers.open_telemetry
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              log_name: %s
              buffer_size_bytes: %d
              buffer_flush_interval: %.3fs
              disable_builtin_labels: true
              grpc_service: {envoy_grpc: {cluster_name: receiver}}
              body: {string_value: %q}`,
			translate.AccessLogName, translate.AccessLogBufferBytes, translate.AccessLogFlushInterval.Seconds(), strings.TrimSuffix(fileFormat, "\n"))
	case "shipped":
		access := filepath.Join(dir, "access-"+strconv.Itoa(port)+".records")
		accessLog = fileLogger(access, accesslogfile.Format)
		shipped = startShipper(b, access, adminPort, receiver)
	case "file":
		accessLog = fileLogger(filepath.Join(dir, "access-"+strconv.Itoa(port)+".log"), fileFormat)
	}
	modelHost, modelPort, _ := net.SplitHostPort(model)
	recvHost, recvPort, _ := net.SplitHostPort(receiver)
	config := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress%s
          route_config:
            virtual_hosts:
            - name: models
              domains: ["*"]
              routes:
              - name: bench/model
                match: {prefix: /models/m}
                route: {cluster: model}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: model
    type: STATIC
    load_assignment:
      cluster_name: model
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
  - name: receiver
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: receiver
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, adminPort, port, accessLog, modelHost, modelPort, recvHost, recvPort)
	path := filepath.Join(dir, fmt.Sprintf("envoy-%s.yaml", logger))
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	tools, err := servers.ToolsDir()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("taskset", "-c", "0", filepath.Join(tools, "envoy"), "-c", path,
		"--concurrency", "1", "--disable-hot-restart", "--log-level", "warn", "--file-flush-interval-msec", "250")
	p, err = servers.Start("envoy", filepath.Join(dir, fmt.Sprintf("envoy-%s.log", logger)), cmd)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	url = fmt.Sprintf("http://127.0.0.1:%d/models/m/predict", port)
	waitUp(b, url)
	return p, url, shipped
}

// fileLogger is the access_log of Envoy's file logger writing format to
// path.
func fileLogger(path, format string) string {
	return fmt.Sprintf(`
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format: {text_format_source: {inline_string: %q}}`, path, format)
}

// startModelProcess runs this binary as the stand-in model on CPU 0 and
// returns its address.
func startModelProcess(b *testing.B) string {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.Port(b))
	cmd := exec.Command("taskset", "-c", "0", os.Args[0])
	cmd.Env = append(os.Environ(), modelEnv+"="+addr)
	p, err := servers.Start("model", filepath.Join(testenv.Dir(b, "model"), "model.log"), cmd)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	return addr
}

// answer is the stand-in model: a small JSON body at once.
func answer(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"predictions":[{"class":"tabby cat","score":0.93}]}`))
}

// startDiscardingReceiver takes any gRPC stream and drops its messages
// (received as empty messages: protobuf checks their framing, nothing
// more).
func startDiscardingReceiver(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		for {
			if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
				// The answer the shipper waits for before it moves on.
				return stream.SendMsg(&emptypb.Empty{})
			}
		}
	}))
	go func() { _ = g.Serve(l) }()
	b.Cleanup(g.Stop)
	return l.Addr().String()
}

// startShipper runs nemesis logship's loop in this process (on CPU 1) on
// Envoy's file, shipping to the receiver.
func startShipper(b *testing.B, path string, adminPort int, receiver string) (shipped func() float64) {
	conn, err := grpc.NewClient(receiver, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := logship.Run(ctx, slog.New(slog.DiscardHandler), logship.Config{
			Path: path, RotateBytes: 64 << 20, Conn: conn, Registerer: reg, Interval: 250 * time.Millisecond, BatchBytes: 1 << 20,
			Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "bench"}, LogName: translate.AccessLogName},
			Reopen:     logship.ReopenEnvoyLogs(fmt.Sprintf("http://127.0.0.1:%d", adminPort)),
		})
		if err != nil {
			b.Error(err)
		}
	}()
	b.Cleanup(func() { cancel(); <-done; _ = conn.Close() })
	return func() float64 {
		families, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "nemesis_logship_entries_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
}
