package command

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nemesis-ml/nemesis/extproc/logship"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

// Logship runs in Envoy's pod when serve has Envoy log to a file
// (--access-log-file): it streams the file's entries to serve.
type Logship struct {
	File          string        `help:"The access-log file Envoy writes (serve's --access-log-file), in a volume shared with Envoy." required:"" env:"NEMESIS_ACCESS_LOG_FILE"`
	ServeAddress  string        `help:"host:port of serve's gRPC port, as Envoy's bootstrap reaches it." required:"" env:"NEMESIS_SERVE_GRPC_ADDRESS"`
	TLSDir        string        `help:"Folder with the pod's client pair and the CA of serve (ca.crt, tls.crt, tls.key: the Envoy's Secret). Empty: plaintext, for serve with --insecure-no-auth." env:"NEMESIS_TLS_DIR"`
	NodeID        string        `help:"Envoy's node id." required:"" env:"NEMESIS_NODE_ID"`
	Environment   string        `help:"Envoy's node cluster: the environment, which the client certificate must name." default:"default" env:"NEMESIS_ENVIRONMENT"`
	EnvoyAdmin    string        `help:"Base URL of Envoy's admin interface, for POST /reopen_logs after rotating the file." default:"http://127.0.0.1:9901" env:"NEMESIS_ENVOY_ADMIN"`
	RotateBytes   int64         `help:"Size past which the file is rotated (at least 64 KiB); up to twice this waits on disk while serve is unreachable." default:"67108864" env:"NEMESIS_ACCESS_LOG_ROTATE_BYTES"`
	Interval      time.Duration `help:"How often the file is read when there was nothing new (Envoy writes it every --file-flush-interval-msec)." default:"250ms" env:"NEMESIS_LOGSHIP_INTERVAL"`
	BatchBytes    int           `help:"Most bytes of records sent and acknowledged as one batch (4 KiB to 2 MiB)." default:"1048576" env:"NEMESIS_LOGSHIP_BATCH_BYTES"`
	MetricsListen string        `help:"Address of Prometheus /metrics (and /healthz); empty: none." env:"NEMESIS_LOGSHIP_METRICS_LISTEN"`
	ShutdownGrace time.Duration `help:"How long to go on shipping after SIGTERM while Envoy drains: it stops sooner once Envoy's admin no longer answers and the file is read to its end. Keep it under the pod's terminationGracePeriodSeconds." default:"28s" env:"NEMESIS_SHUTDOWN_GRACE"`
}

func (c Logship) Run(ctx context.Context, log *slog.Logger) error {
	// A batch is one gRPC message, which serve takes up to 4 MiB.
	if c.BatchBytes < 4<<10 || c.BatchBytes > 2<<20 {
		return fmt.Errorf("--batch-bytes %d: want 4096 to 2097152", c.BatchBytes)
	}
	if c.RotateBytes < 64<<10 {
		return fmt.Errorf("--rotate-bytes %d: want at least 65536", c.RotateBytes)
	}
	creds := insecure.NewCredentials()
	if c.TLSDir != "" {
		cfg, err := pki.ClientTLS(c.TLSDir)
		if err != nil {
			return fmt.Errorf("loading --tls-dir: %w", err)
		}
		creds = credentials.NewTLS(cfg)
	} else {
		log.Warn("no --tls-dir: shipping without TLS, which only serve with --insecure-no-auth takes")
	}
	conn, err := grpc.NewClient(c.ServeAddress, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("dialing serve: %w", err)
	}
	defer func() { _ = conn.Close() }()
	reg := httpserver.NewRegistry()
	if c.MetricsListen != "" {
		// Up while the shipper runs, which goes on past ctx's end.
		srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		go func() {
			if err := httpserver.Serve(srvCtx, log, c.MetricsListen, httpserver.Mux(reg), time.Second); err != nil {
				log.Error("metrics server", "err", err)
			}
		}()
	}
	return logship.Run(ctx, log, logship.Config{
		Path:        c.File,
		RotateBytes: c.RotateBytes,
		Reopen:      logship.ReopenEnvoyLogs(c.EnvoyAdmin),
		EnvoyAlive:  logship.EnvoyAlive(c.EnvoyAdmin),
		Conn:        conn,
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{
			Node:    &corev3.Node{Id: c.NodeID, Cluster: c.Environment},
			LogName: translate.AccessLogName,
		},
		Interval:      c.Interval,
		BatchBytes:    c.BatchBytes,
		Registerer:    reg,
		ShutdownGrace: c.ShutdownGrace,
	})
}
