// Package logship ships Envoy's file access log to serve. Envoy writes one
// record a request to a file (internal/accesslogfile), which costs it less
// than its gRPC access logger; the shipper, a second container in
// Envoy's pod, reads the lines, rotates the file, and streams the entries
// to serve's access-log service as Envoy's gRPC logger would, under the
// pod's client certificate. Each batch is one stream, closed and answered
// before the position moves past it: what serve acknowledged is never sent
// again, and what it did not is sent again after a restart of either side.
package logship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/nemesis-ml/nemesis/internal/accesslogfile"
)

// Config says what to read and where to send it.
type Config struct {
	// Path is the file Envoy's file access logger writes.
	Path string
	// RotateBytes is the size past which the file is rotated.
	RotateBytes int64
	// Reopen asks Envoy to reopen its access logs (its admin
	// POST /reopen_logs).
	Reopen func(context.Context) error
	// Conn reaches serve's gRPC port.
	Conn grpc.ClientConnInterface
	// Identifier names the Envoy: its node (cluster: the environment)
	// and the log name.
	Identifier *accesslogv3.StreamAccessLogsMessage_Identifier
	// Interval is how often the file is read when there is nothing new.
	Interval time.Duration
	// BatchBytes bounds the records of one batch.
	BatchBytes int
	// Registerer receives the shipper's metrics; none when nil.
	Registerer prometheus.Registerer
	// ShutdownGrace is how long the shipper goes on once ctx ends: Envoy
	// drains its connections after SIGTERM and logs their requests all
	// the while. It stops sooner once EnvoyAlive says Envoy is gone and
	// the file is read to its end.
	ShutdownGrace time.Duration
	// EnvoyAlive says whether Envoy still runs; nil: it is gone.
	EnvoyAlive func(context.Context) bool
}

// Run ships until ctx ends, then until Envoy is gone and its last records
// are shipped (ShutdownGrace at most). Serve unreachable is waited out,
// with backoff, on the same batch; the file keeps growing meanwhile, up to
// twice RotateBytes.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	m := newMetrics(cfg.Registerer)
	// Batches and rotations go on past ctx's end, until the deadline set
	// then.
	work, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var deadline time.Time
	f := newFollower(cfg.Path, cfg.RotateBytes, func() error {
		ctx, cancel := context.WithTimeout(work, 5*time.Second)
		defer cancel()
		return cfg.Reopen(ctx)
	})
	defer f.close()
	client := accesslogv3.NewAccessLogServiceClient(cfg.Conn)
	backoff := cfg.Interval
	var reported int64
	for {
		records, end, err := f.records(cfg.BatchBytes)
		busy := err == nil && end > f.offset
		switch {
		case err != nil:
		case !busy:
			err = f.idle()
		default:
			entries := parse(log, records, m)
			if len(entries) == 0 {
				err = f.advance(end) // nothing but skipped records
				break
			}
			if err = send(work, client, cfg.Identifier, entries); err != nil {
				err = fmt.Errorf("sending %d entries: %w", len(entries), err)
				if berr := f.backlog(); berr != nil {
					log.Warn("log shipping: bounding the backlog", "err", berr)
				}
				break
			}
			m.shipped.Add(float64(len(entries)))
			err = f.advance(end)
		}
		if rerr := f.rotate(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if f.dropped > reported {
			m.dropped.Add(float64(f.dropped - reported))
			reported = f.dropped
		}
		wait := cfg.Interval
		switch {
		case err != nil:
			m.failures.Inc()
			log.Warn("log shipping", "err", err, "retry in", backoff)
			wait, backoff = backoff, min(2*backoff, 10*time.Second)
		case busy:
			wait, backoff = 0, cfg.Interval // more may be waiting
		default:
			backoff = cfg.Interval
		}
		if ctx.Err() != nil {
			if deadline.IsZero() {
				deadline = time.Now().Add(cfg.ShutdownGrace)
				log.Info("log shipping: stopping once Envoy is gone and its last records are shipped", "at most", cfg.ShutdownGrace)
			}
			if time.Now().After(deadline) {
				if busy || err != nil {
					log.Warn("log shipping: stopped with records left", "err", err)
				}
				return nil
			}
			if !busy && err == nil && (cfg.EnvoyAlive == nil || !cfg.EnvoyAlive(work)) {
				return nil
			}
			time.Sleep(min(wait, time.Until(deadline)))
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// parse turns records into entries; a record that is not one is skipped
// (and counted), as a row that fails its checks is.
func parse(log *slog.Logger, records [][]byte, m *metrics) []*accesslogdatav3.HTTPAccessLogEntry {
	entries := make([]*accesslogdatav3.HTTPAccessLogEntry, 0, len(records))
	for _, r := range records {
		e, err := accesslogfile.Parse(r)
		if err != nil {
			m.malformed.Inc()
			log.Warn("log shipping: skipping a record", "err", err)
			continue
		}
		entries = append(entries, e)
	}
	return entries
}

// send streams entries as one message and waits for serve's answer,
// which comes once serve has taken every message of the stream.
func send(ctx context.Context, client accesslogv3.AccessLogServiceClient, id *accesslogv3.StreamAccessLogsMessage_Identifier, entries []*accesslogdatav3.HTTPAccessLogEntry) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := client.StreamAccessLogs(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&accesslogv3.StreamAccessLogsMessage{
		Identifier: id,
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries},
		},
	})
	// A failed Send says only that the stream ended: the reason comes with
	// the answer.
	if _, rerr := stream.CloseAndRecv(); rerr != nil {
		return rerr
	}
	return err
}

type metrics struct {
	shipped, malformed, failures, dropped prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_logship_entries_total", Help: "Access-log entries serve acknowledged."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_logship_malformed_records_total", Help: "Records of the access-log file that are not an entry, skipped."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_logship_failures_total", Help: "Batches serve did not acknowledge (sent again after a backoff) and file errors."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_logship_dropped_bytes_total", Help: "Bytes of the access-log file given up: a backlog past twice the rotation size, or a record past 1 MiB."}),
	}
	if r != nil {
		r.MustRegister(m.shipped, m.malformed, m.failures, m.dropped)
	}
	return m
}

// EnvoyAlive is a Config.EnvoyAlive for the Envoy whose admin interface is
// at admin: alive while it answers at all (a draining Envoy answers 503).
func EnvoyAlive(admin string) func(context.Context) bool {
	url := strings.TrimSuffix(admin, "/") + "/ready"
	return func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	}
}

// ReopenEnvoyLogs is a Config.Reopen that asks the Envoy whose admin
// interface is at admin (a base URL) to reopen its access logs.
func ReopenEnvoyLogs(admin string) func(context.Context) error {
	url := strings.TrimSuffix(admin, "/") + "/reopen_logs"
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("asking envoy to reopen its logs: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("asking envoy to reopen its logs: %s", resp.Status)
		}
		return nil
	}
}
