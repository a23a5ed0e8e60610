package command

import (
	"context"
	"fmt"
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
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
	"github.com/nemesis-ml/nemesis/extproc/retention"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/xds/ir"
	"github.com/nemesis-ml/nemesis/xds/server"
)

type proxyLogFlags struct {
	AccessLogCluster       string        `help:"Cluster of Envoy's bootstrap that reaches this server's gRPC (xDS) port; Envoy streams every request's access log there. Empty turns proxy logging off." default:"nemesis-xds" env:"NEMESIS_ACCESS_LOG_CLUSTER"`
	AccessLogFile          string        `help:"Have Envoy write every request's access log to this file in its pod, as text records, for nemesis logship beside it to ship to this server: it costs Envoy less than streaming (docs/proxy-logs.md). Empty: Envoy streams to --access-log-cluster." env:"NEMESIS_ACCESS_LOG_FILE"`
	ProxyLogBatchSize      int           `help:"Most proxy log rows written by one COPY." default:"5000" env:"NEMESIS_PROXY_LOG_BATCH_SIZE"`
	ProxyLogFlushInterval  time.Duration `help:"Longest a proxy log row waits for its batch to fill." default:"1s" env:"NEMESIS_PROXY_LOG_FLUSH_INTERVAL"`
	ProxyLogMemoryRows     int           `help:"Proxy log rows kept in memory while PostgreSQL is unreachable; more wait in the spill folder." default:"200000" env:"NEMESIS_PROXY_LOG_MEMORY_ROWS"`
	ProxyLogMemoryBytes    int64         `help:"Bytes of proxy log rows kept in memory; more wait in the spill folder." default:"134217728" env:"NEMESIS_PROXY_LOG_MEMORY_BYTES"`
	ProxyLogSpillDir       string        `help:"Folder for proxy log rows beyond the memory limits, written when PostgreSQL returns (also across restarts). Default: nemesis/proxy-logs-<xds listen address> in the user's cache folder." env:"NEMESIS_PROXY_LOG_SPILL_DIR"`
	ProxyLogSpillMaxBytes  int64         `help:"Size limit of the spill folder, leftovers included; rows beyond it are dropped and counted." default:"1073741824" env:"NEMESIS_PROXY_LOG_SPILL_MAX_BYTES"`
	ProxyLogLeftoverMaxAge time.Duration `help:"Age after which unreadable (.bad) and unfinished (.tmp) files of the spill folder are removed." default:"168h" env:"NEMESIS_PROXY_LOG_LEFTOVER_MAX_AGE"`
	ProxyLogWriters        int           `help:"Proxy log batches written at once, each on its own connection." default:"2" env:"NEMESIS_PROXY_LOG_WRITERS"`
	ProxyLogQueryConns     int32         `name:"proxy-log-query-connections" help:"PostgreSQL connections of GET /proxy/logs, a pool of its own: slow queries wait for these, never for the log writers' or the settings API's." default:"2" env:"NEMESIS_PROXY_LOG_QUERY_CONNECTIONS"`
	ProxyLogRetention      time.Duration `help:"Age after which proxy log rows are deleted." default:"168h" env:"NEMESIS_PROXY_LOG_RETENTION"`
	ProxyLogDropQuery      bool          `help:"Log target URLs without their query strings (they may carry keys or user ids)." env:"NEMESIS_PROXY_LOG_DROP_QUERY"`
	ProxyLogRetentionEvery time.Duration `help:"How often old proxy log rows are looked for." default:"10m" env:"NEMESIS_PROXY_LOG_RETENTION_EVERY"`
	PodTraffic             bool          `help:"Time each pod's requests from the access logs and store them as the pod's samples (request rate, response time, in-flight requests), so sidecars can stay out of the request path (--mode meter)." default:"true" negatable:"" env:"NEMESIS_POD_TRAFFIC"`
	PodTrafficInterval     time.Duration `help:"Interval of the pod samples taken from the access logs; every replica must use the same (their samples of an interval add up). Shorter reacts sooner and stores more samples in Redis." default:"500ms" env:"NEMESIS_POD_TRAFFIC_INTERVAL"`
}

// proxyLogs are the parts of serve that handle proxy logs.
type proxyLogs struct {
	sink      *logsink.Sink
	service   *accesslog.Server
	query     *logquery.Handler
	queryPool *pgxpool.Pool
	retention *retention.Retention
	// traffic is nil when --no-pod-traffic.
	traffic *podtraffic.Aggregator
	flusher *podtraffic.Flusher
}

func (p *proxyLogs) close() { p.queryPool.Close() }

// routesChanged gives the pods of the routes to the per-pod traffic.
func (p *proxyLogs) routesChanged(routes map[string][]ir.Route) {
	if p.traffic != nil {
		p.traffic.SetRoutes(routes)
	}
}

// runTraffic stores the per-pod traffic until ctx ends.
func (p *proxyLogs) runTraffic(ctx context.Context) error {
	if p.flusher != nil {
		p.flusher.Run(ctx)
	}
	return nil
}

// build wires the proxy-log parts: the sink and retention write through
// pool, the queries read through a pool of their own on databaseURL;
// xdsListen names the default spill folder, so servers sharing a machine
// never replay each other's rows.
func (f proxyLogFlags) build(ctx context.Context, pool *pgxpool.Pool, databaseURL string, samples podtraffic.Appender, envoys func() []server.EnvoyStatus, reg prometheus.Registerer, log *slog.Logger, xdsListen string) (*proxyLogs, error) {
	log = log.With("component", "proxylogs")
	spillDir := f.ProxyLogSpillDir
	if spillDir == "" {
		// Not the shared temporary folder, where another user could
		// create the predictable name first.
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("choosing the proxy log spill folder (set --proxy-log-spill-dir): %w", err)
		}
		spillDir = filepath.Join(cache, "nemesis", "proxy-logs-"+strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(xdsListen))
	}
	sink, err := logsink.New(pool, logsink.Config{
		BatchSize: f.ProxyLogBatchSize, FlushInterval: f.ProxyLogFlushInterval,
		MemoryRows: f.ProxyLogMemoryRows, MemoryBytes: f.ProxyLogMemoryBytes,
		SpillDir: spillDir, SpillMaxBytes: f.ProxyLogSpillMaxBytes, LeftoverMaxAge: f.ProxyLogLeftoverMaxAge,
		Writers: f.ProxyLogWriters,
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
	if f.ProxyLogQueryConns < 1 {
		return nil, fmt.Errorf("--proxy-log-query-connections must be at least 1")
	}
	queryPool, err := database.OpenPool(ctx, databaseURL, database.PoolConfig{
		Name: "nemesis-proxy-log-queries", MaxConns: f.ProxyLogQueryConns, StatementTimeout: logquery.Timeout,
	})
	if err != nil {
		return nil, err
	}
	query, err := logquery.New(queryPool, log, reg)
	if err != nil {
		queryPool.Close()
		return nil, err
	}
	p := &proxyLogs{sink: sink, query: query, queryPool: queryPool, retention: ret}
	opts := accesslog.Options{DropQuery: f.ProxyLogDropQuery, Registerer: reg}
	if f.PodTraffic {
		if f.PodTrafficInterval <= 0 {
			queryPool.Close()
			return nil, fmt.Errorf("--pod-traffic-interval %v: want more than 0", f.PodTrafficInterval)
		}
		p.traffic = podtraffic.New(func() map[string]bool {
			here := map[string]bool{}
			for _, e := range envoys() {
				here[e.Environment] = true
			}
			return here
		})
		p.flusher = podtraffic.NewFlusher(p.traffic, samples, f.PodTrafficInterval, reg, log.With("component", "podtraffic"))
		opts.Traffic = p.traffic
	}
	p.service = accesslog.New(sink, log, opts)
	return p, nil
}
