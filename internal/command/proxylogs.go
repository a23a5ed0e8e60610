package command

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/extproc/accesslog"
	"github.com/nemesis-ml/nemesis/extproc/logquery"
	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/retention"
)

type proxyLogFlags struct {
	AccessLogCluster       string        `help:"Cluster of Envoy's bootstrap that reaches this server's gRPC (xDS) port; Envoy streams every request's access log there. Empty turns proxy logging off." default:"nemesis-xds" env:"NEMESIS_ACCESS_LOG_CLUSTER"`
	ProxyLogBatchSize      int           `help:"Most proxy log rows written by one COPY." default:"5000" env:"NEMESIS_PROXY_LOG_BATCH_SIZE"`
	ProxyLogFlushInterval  time.Duration `help:"Longest a proxy log row waits for its batch to fill." default:"1s" env:"NEMESIS_PROXY_LOG_FLUSH_INTERVAL"`
	ProxyLogMemoryRows     int           `help:"Proxy log rows kept in memory while PostgreSQL is unreachable; more wait in the spill folder." default:"200000" env:"NEMESIS_PROXY_LOG_MEMORY_ROWS"`
	ProxyLogSpillDir       string        `help:"Folder for proxy log rows beyond the memory limit, written when PostgreSQL returns (also across restarts). Default: nemesis-proxy-logs-<xds listen address> in the temporary folder." env:"NEMESIS_PROXY_LOG_SPILL_DIR"`
	ProxyLogSpillMaxBytes  int64         `help:"Size limit of the spill folder; rows beyond it are dropped and counted." default:"1073741824" env:"NEMESIS_PROXY_LOG_SPILL_MAX_BYTES"`
	ProxyLogWriters        int           `help:"Proxy log batches written at once, each on its own connection." default:"2" env:"NEMESIS_PROXY_LOG_WRITERS"`
	ProxyLogRetention      time.Duration `help:"Age after which proxy log rows are deleted." default:"168h" env:"NEMESIS_PROXY_LOG_RETENTION"`
	ProxyLogRetentionEvery time.Duration `help:"How often old proxy log rows are looked for." default:"10m" env:"NEMESIS_PROXY_LOG_RETENTION_EVERY"`
}

// proxyLogs are the parts of serve that handle proxy logs.
type proxyLogs struct {
	sink      *logsink.Sink
	service   *accesslog.Server
	query     *logquery.Handler
	retention *retention.Retention
}

// build wires the proxy-log parts; xdsListen names the default spill
// folder, so servers sharing a machine never replay each other's rows.
func (f proxyLogFlags) build(pool *pgxpool.Pool, reg prometheus.Registerer, log *slog.Logger, xdsListen string) (*proxyLogs, error) {
	log = log.With("component", "proxylogs")
	spillDir := f.ProxyLogSpillDir
	if spillDir == "" {
		spillDir = filepath.Join(os.TempDir(), "nemesis-proxy-logs-"+strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(xdsListen))
	}
	sink, err := logsink.New(pool, logsink.Config{
		BatchSize: f.ProxyLogBatchSize, FlushInterval: f.ProxyLogFlushInterval, MemoryRows: f.ProxyLogMemoryRows,
		SpillDir: spillDir, SpillMaxBytes: f.ProxyLogSpillMaxBytes, Writers: f.ProxyLogWriters,
	}, reg, log)
	if err != nil {
		return nil, err
	}
	ret, err := retention.New(pool, retention.Config{
		MaxAge: f.ProxyLogRetention, Interval: f.ProxyLogRetentionEvery, BatchSize: 10_000,
	}, reg, log)
	if err != nil {
		return nil, err
	}
	return &proxyLogs{
		sink: sink, service: accesslog.New(sink, log), query: logquery.New(pool, log), retention: ret,
	}, nil
}
