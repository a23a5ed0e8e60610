// Package logsink writes proxy_logs rows to PostgreSQL in COPY batches. Rows
// wait in a memory queue bounded in rows and bytes, then in files of a local
// spill folder, while PostgreSQL is unreachable, and are written once it is
// back. Every batch carries an id committed with its rows, so a batch
// retried after an unknown outcome (the connection died during COMMIT) is
// written once.
//
// Bad rows never hold up good ones: rows that fail the checks of Row.Check
// and rows PostgreSQL refuses (found by halving the batch under savepoints)
// go to proxy_logs_rejected in the same transaction as the rest of their
// batch, and are counted by reason.
package logsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config bounds the sink's batches and buffers.
type Config struct {
	// BatchSize is the most rows one COPY writes; a batch this full is
	// written at once.
	BatchSize int
	// FlushInterval is the longest a row waits for its batch to fill.
	FlushInterval time.Duration
	// MemoryRows and MemoryBytes bound the rows waiting in memory (Row.size
	// estimates a row's bytes); beyond either, batches go to SpillDir.
	MemoryRows  int
	MemoryBytes int64
	// SpillDir holds batches that did not fit in memory, and those left at
	// shutdown; they are written when the sink next runs.
	SpillDir string
	// SpillMaxBytes bounds SpillDir, counting batches and the leftovers
	// (.bad, .tmp) of earlier runs; rows beyond it are dropped and counted.
	SpillMaxBytes int64
	// LeftoverMaxAge is how long .bad and .tmp files stay in SpillDir.
	LeftoverMaxAge time.Duration
	// Writers is how many batches are written at once, each on its own
	// connection: PostgreSQL spends most of a COPY maintaining indexes, on
	// one core per connection.
	Writers int
}

// DefaultConfig suits one Envoy fleet of moderate traffic.
func DefaultConfig() Config {
	return Config{
		BatchSize: 5000, FlushInterval: time.Second, MemoryRows: 200_000, MemoryBytes: 128 << 20,
		SpillMaxBytes: 1 << 30, LeftoverMaxAge: 7 * 24 * time.Hour, Writers: 2,
	}
}

func (c Config) validate() error {
	switch {
	case c.BatchSize < 1:
		return errors.New("batch size must be at least 1")
	case c.FlushInterval <= 0:
		return errors.New("flush interval must be positive")
	case c.MemoryRows < c.BatchSize:
		return errors.New("memory rows must be at least the batch size")
	case c.MemoryBytes < 1<<20:
		return errors.New("memory bytes must be at least 1 MiB")
	case c.LeftoverMaxAge <= 0:
		return errors.New("leftover age must be positive")
	case c.SpillDir == "":
		return errors.New("spill folder must be set")
	case c.Writers < 1:
		return errors.New("writers must be at least 1")
	}
	return nil
}

// Stats are the sink's row counts since it started.
type Stats struct {
	Written, Spilled, Dropped int64
	// Rejected rows went to proxy_logs_rejected (or are on their way);
	// Truncated rows had their URL cut to MaxURLBytes.
	Rejected, Truncated int64
	// Pending rows are accepted and not yet written: open, in memory or
	// spilled.
	Pending int64
}

type batch struct {
	ID       uuid.UUID  `json:"id"`
	Rows     []Row      `json:"rows"`
	Rejected []Rejected `json:"rejected,omitempty"`
	bytes    int64
}

// count is how many rows the batch holds, good or rejected.
func (b *batch) count() int { return len(b.Rows) + len(b.Rejected) }

// Sink batches rows into proxy_logs.
type Sink struct {
	pool  *pgxpool.Pool
	cfg   Config
	log   *slog.Logger
	spill *spill

	written, spilled, dropped, writeErrors, truncated atomic.Int64
	rejected                                          *prometheus.CounterVec
	rejectedTotal                                     atomic.Int64
	// lastWrite is when a batch was last written and writeLag how old its
	// oldest row was then, in Unix and plain nanoseconds.
	lastWrite, writeLag atomic.Int64

	mu           sync.Mutex
	open         []Row
	openRejected []Rejected
	openBytes    int64
	memory       []*batch
	memoryRows   int
	memoryBytes  int64
	closed       bool // Run returned: new rows go straight to disk
	lastDrop     time.Time
	wake         chan struct{}

	logMu      sync.Mutex
	lastLog    map[string]time.Time // reason -> last rejection logged
	suppressed map[string]int       // reason -> rejections not logged since
}

// New returns a sink writing through pool, with the batches a previous run
// left in cfg.SpillDir queued. Its counters are registered in reg.
func New(pool *pgxpool.Pool, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Sink, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("proxy log sink: %w", err)
	}
	sp, err := openSpill(cfg.SpillDir, cfg.SpillMaxBytes, cfg.LeftoverMaxAge, log)
	if err != nil {
		return nil, err
	}
	if n := sp.rows(); n > 0 {
		log.Info("proxy log rows from an earlier run wait in the spill folder", "rows", n, "dir", cfg.SpillDir)
	}
	s := &Sink{
		pool: pool, cfg: cfg, log: log, spill: sp, wake: make(chan struct{}, 1),
		lastLog: map[string]time.Time{}, suppressed: map[string]int{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_proxy_logs_rows_rejected_total",
			Help: "Proxy log rows not written to proxy_logs but to proxy_logs_rejected, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{ReasonEnvironment, ReasonMethod, ReasonStatus, ReasonText, ReasonTimestamp, ReasonNumber, ReasonClientIP, ReasonDatabase} {
		s.rejected.WithLabelValues(r)
	}
	if err := reg.Register(s.rejected); err != nil {
		return nil, fmt.Errorf("registering rejected counter: %w", err)
	}
	for _, c := range []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"nemesis_proxy_logs_rows_written_total", "Proxy log rows written to PostgreSQL.", &s.written},
		{"nemesis_proxy_logs_rows_spilled_total", "Proxy log rows that waited on local disk because memory was full.", &s.spilled},
		{"nemesis_proxy_logs_rows_dropped_total", "Proxy log rows dropped because memory and the spill folder were full.", &s.dropped},
		{"nemesis_proxy_logs_write_errors_total", "Failed attempts to write a batch of proxy log rows.", &s.writeErrors},
		{"nemesis_proxy_logs_urls_truncated_total", "Proxy log rows whose target_url was cut to its size limit.", &s.truncated},
	} {
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.v.Load()) })); err != nil {
			return nil, fmt.Errorf("registering %s: %w", c.name, err)
		}
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nemesis_proxy_logs_rows_pending", Help: "Proxy log rows accepted and not yet written.",
	}, func() float64 { return float64(s.Stats().Pending) })); err != nil {
		return nil, fmt.Errorf("registering pending gauge: %w", err)
	}
	if err := registerLag(reg, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Stats returns the sink's counts.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	pending := int64(len(s.open) + len(s.openRejected) + s.memoryRows)
	s.mu.Unlock()
	return Stats{
		Written: s.written.Load(), Spilled: s.spilled.Load(), Dropped: s.dropped.Load(),
		Rejected: s.rejectedTotal.Load(), Truncated: s.truncated.Load(),
		Pending: pending + int64(s.spill.rows()),
	}
}

// Add checks and queues rows; it never waits for PostgreSQL. Rows that fail
// Row.Check are queued for proxy_logs_rejected.
func (s *Sink) Add(rows ...Row) {
	good := rows[:0:0]
	var bad []Rejected
	var bytes int64
	for i := range rows {
		r := rows[i]
		cut, rj := r.Check()
		if cut {
			s.truncated.Add(1)
		}
		if rj != nil {
			s.reject(*rj, "")
			bad = append(bad, *rj)
		} else {
			good = append(good, r)
		}
		bytes += int64(r.size())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = append(s.open, good...)
	s.openRejected = append(s.openRejected, bad...)
	s.openBytes += bytes
	for len(s.open)+len(s.openRejected) >= s.cfg.BatchSize || (s.closed && len(s.open)+len(s.openRejected) > 0) {
		n := min(len(s.open), s.cfg.BatchSize)
		m := min(len(s.openRejected), s.cfg.BatchSize-n)
		share := s.openBytes * int64(n+m) / int64(len(s.open)+len(s.openRejected))
		s.sealLocked(&batch{Rows: s.open[:n:n], Rejected: s.openRejected[:m:m], bytes: share})
		s.open = append([]Row(nil), s.open[n:]...)
		s.openRejected = append([]Rejected(nil), s.openRejected[m:]...)
		s.openBytes -= share
	}
}

// reject counts a rejected row and logs it, at most one line per reason
// every 10 s with the number not logged since.
func (s *Sink) reject(rj Rejected, batch string) {
	s.rejected.WithLabelValues(rj.Reason).Inc()
	s.rejectedTotal.Add(1)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if time.Since(s.lastLog[rj.Reason]) < 10*time.Second {
		s.suppressed[rj.Reason]++
		return
	}
	s.log.Warn("proxy log row rejected; it goes to proxy_logs_rejected", "reason", rj.Reason, "err", rj.Error,
		"environment", truncate(rj.Row.Environment, 100),
		"target_url", truncate(rj.Row.TargetURL, 200),
		"request_id", truncate(rj.Row.RequestID, 100),
		"batch", batch, "not_logged_since", s.suppressed[rj.Reason])
	s.lastLog[rj.Reason] = time.Now()
	s.suppressed[rj.Reason] = 0
}

// sealLocked queues a full or timed-out batch in memory, or on disk when
// memory is full; s.mu must be held.
func (s *Sink) sealLocked(b *batch) {
	b.ID = uuid.New()
	if !s.closed && s.memoryRows+b.count() <= s.cfg.MemoryRows && s.memoryBytes+b.bytes <= s.cfg.MemoryBytes {
		s.memory = append(s.memory, b)
		s.memoryRows += b.count()
		s.memoryBytes += b.bytes
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return
	}
	err := s.spill.put(b)
	if err == nil {
		s.spilled.Add(int64(b.count()))
		return
	}
	s.dropped.Add(int64(b.count()))
	// One line per episode of drops, not one per batch.
	if time.Since(s.lastDrop) > 10*time.Second {
		s.log.Error("dropping proxy log rows: memory and spill folder are full", "rows", b.count(),
			"dropped_total", s.dropped.Load(), "err", err)
	}
	s.lastDrop = time.Now()
}

// Run writes batches until ctx ends, then tries a last time and spills what
// is left, so it is written by the next run.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range s.cfg.Writers {
		// One writer reads the spill folder, oldest file first.
		wg.Go(func() { s.writer(ctx, i == 0) })
	}
	ticker := time.NewTicker(s.cfg.FlushInterval)
	defer ticker.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			s.sealOpen()
		}
	}
	wg.Wait()

	s.sealOpen()
	last, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		b := s.takeMemory()
		if b == nil {
			break
		}
		if s.write(last, b) != nil {
			s.requeue(b)
			break
		}
		s.doneMemory(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	memory := s.memory
	s.memory, s.memoryRows, s.memoryBytes = nil, 0, 0
	for _, b := range memory {
		s.sealLocked(b)
	}
	return nil
}

func (s *Sink) writer(ctx context.Context, spilled bool) {
	for s.drain(ctx, spilled) {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-time.After(s.cfg.FlushInterval):
		}
	}
}

func (s *Sink) sealOpen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.open)+len(s.openRejected) > 0 {
		s.sealLocked(&batch{Rows: s.open, Rejected: s.openRejected, bytes: s.openBytes})
		s.open, s.openRejected, s.openBytes = nil, nil, 0
	}
}

// drain writes queued batches, retrying each until it is written; it
// returns false when ctx ended. The writer that reads the spill folder
// empties it first, so spilled rows do not starve behind steady traffic.
func (s *Sink) drain(ctx context.Context, spilled bool) bool {
	for {
		if spilled {
			s.spill.expire(time.Now())
			b, err := s.spill.oldest()
			if err != nil {
				rows, qerr := s.spill.quarantine()
				s.dropped.Add(int64(rows))
				s.log.Error("unreadable spilled batch set aside as .bad; its rows are counted as dropped",
					"rows", rows, "err", errors.Join(err, qerr))
				continue
			}
			if b != nil {
				s.recheck(b)
				if !s.writeRetrying(ctx, b) {
					return false
				}
				if err := s.spill.remove(b.ID); err != nil {
					s.log.Error("removing a written spilled batch", "batch", b.ID, "err", err)
				}
				continue
			}
		}
		b := s.takeMemory()
		if b == nil {
			return true
		}
		if !s.writeRetrying(ctx, b) {
			s.requeue(b)
			return false
		}
		s.doneMemory(b)
	}
}

// takeMemory takes the oldest batch in memory; its rows count against
// MemoryRows until doneMemory.
func (s *Sink) takeMemory() *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.memory) == 0 {
		return nil
	}
	b := s.memory[0]
	s.memory[0] = nil
	s.memory = s.memory[1:]
	return b
}

// requeue puts back a batch that was taken and not written.
func (s *Sink) requeue(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memory = append([]*batch{b}, s.memory...)
}

func (s *Sink) doneMemory(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memoryRows -= b.count()
	s.memoryBytes -= b.bytes
}

// recheck moves the rows of a spilled batch that fail Row.Check to its
// rejected rows: the file may come from an older version, or by hand.
func (s *Sink) recheck(b *batch) {
	good := b.Rows[:0]
	for i := range b.Rows {
		cut, rj := b.Rows[i].Check()
		if cut {
			s.truncated.Add(1)
		}
		if rj != nil {
			s.reject(*rj, b.ID.String())
			b.Rejected = append(b.Rejected, *rj)
			continue
		}
		good = append(good, b.Rows[i])
	}
	b.Rows = good
}

// writeRetrying writes b, waiting longer between attempts up to 5 s, until
// it is written (true) or ctx ends (false).
func (s *Sink) writeRetrying(ctx context.Context, b *batch) bool {
	wait := 100 * time.Millisecond
	for failures := 0; ; failures++ {
		err := s.write(ctx, b)
		if err == nil {
			if failures > 0 {
				s.log.Info("proxy log writes resumed", "failed_attempts", failures)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.writeErrors.Add(1)
		if failures == 0 {
			s.log.Warn("writing proxy logs failed; rows wait in memory, then on disk, and are retried",
				"batch", b.ID, "rows", len(b.Rows), "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// noteWrite records when rows were written and how long the oldest of them
// waited since its request started.
func (s *Sink) noteWrite(rows []Row, now time.Time) {
	oldest := now
	for _, r := range rows {
		if r.Timestamp.Before(oldest) {
			oldest = r.Timestamp
		}
	}
	s.lastWrite.Store(now.UnixNano())
	s.writeLag.Store(int64(now.Sub(oldest)))
}

// registerLag registers the gauges of the sink's write lag.
func registerLag(reg prometheus.Registerer, s *Sink) error {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nemesis_proxy_logs_last_write_timestamp_seconds",
			Help: "Unix time of the last batch of proxy log rows written (0 before the first).",
		}, func() float64 { return float64(s.lastWrite.Load()) / 1e9 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nemesis_proxy_logs_write_lag_seconds",
			Help: "How long the oldest row of the last batch written waited, from its request's start to its write.",
		}, func() float64 { return time.Duration(s.writeLag.Load()).Seconds() }),
	} {
		if err := reg.Register(g); err != nil {
			return fmt.Errorf("registering write lag gauges: %w", err)
		}
	}
	return nil
}
