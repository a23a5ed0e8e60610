// Package logsink writes proxy_logs rows to PostgreSQL in COPY batches. Rows
// wait in a bounded memory queue, then in files of a local spill folder,
// while PostgreSQL is unreachable, and are written once it is back. Every
// batch carries an id committed with its rows, so a batch retried after an
// unknown outcome (the connection died during COMMIT) is written once.
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
	"github.com/jackc/pgx/v5"
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
	// MemoryRows is how many rows may wait in memory; beyond it batches go
	// to SpillDir.
	MemoryRows int
	// SpillDir holds batches that did not fit in memory, and those left at
	// shutdown; they are written when the sink next runs.
	SpillDir string
	// SpillMaxBytes bounds SpillDir; rows beyond it are dropped and counted.
	SpillMaxBytes int64
	// Writers is how many batches are written at once, each on its own
	// connection: PostgreSQL spends most of a COPY maintaining indexes, on
	// one core per connection.
	Writers int
}

// DefaultConfig suits one Envoy fleet of moderate traffic.
func DefaultConfig() Config {
	return Config{BatchSize: 5000, FlushInterval: time.Second, MemoryRows: 200_000, SpillMaxBytes: 1 << 30, Writers: 2}
}

func (c Config) validate() error {
	switch {
	case c.BatchSize < 1:
		return errors.New("batch size must be at least 1")
	case c.FlushInterval <= 0:
		return errors.New("flush interval must be positive")
	case c.MemoryRows < c.BatchSize:
		return errors.New("memory rows must be at least the batch size")
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
	// Pending rows are accepted and not yet written: open, in memory or
	// spilled.
	Pending int64
}

type batch struct {
	ID   uuid.UUID `json:"id"`
	Rows []Row     `json:"rows"`
}

// Sink batches rows into proxy_logs.
type Sink struct {
	pool  *pgxpool.Pool
	cfg   Config
	log   *slog.Logger
	spill *spill

	written, spilled, dropped, writeErrors atomic.Int64

	mu         sync.Mutex
	open       []Row
	memory     []*batch
	memoryRows int
	closed     bool // Run returned: new rows go straight to disk
	lastDrop   time.Time
	wake       chan struct{}
}

// New returns a sink writing through pool, with the batches a previous run
// left in cfg.SpillDir queued. Its counters are registered in reg.
func New(pool *pgxpool.Pool, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Sink, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("proxy log sink: %w", err)
	}
	sp, err := openSpill(cfg.SpillDir, cfg.SpillMaxBytes)
	if err != nil {
		return nil, err
	}
	if n := sp.rows(); n > 0 {
		log.Info("proxy log rows from an earlier run wait in the spill folder", "rows", n, "dir", cfg.SpillDir)
	}
	s := &Sink{pool: pool, cfg: cfg, log: log, spill: sp, wake: make(chan struct{}, 1)}
	for _, c := range []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"nemesis_proxy_logs_rows_written_total", "Proxy log rows written to PostgreSQL.", &s.written},
		{"nemesis_proxy_logs_rows_spilled_total", "Proxy log rows that waited on local disk because memory was full.", &s.spilled},
		{"nemesis_proxy_logs_rows_dropped_total", "Proxy log rows dropped because memory and the spill folder were full.", &s.dropped},
		{"nemesis_proxy_logs_write_errors_total", "Failed attempts to write a batch of proxy log rows.", &s.writeErrors},
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
	return s, nil
}

// Stats returns the sink's counts.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	pending := int64(len(s.open) + s.memoryRows)
	s.mu.Unlock()
	return Stats{
		Written: s.written.Load(), Spilled: s.spilled.Load(), Dropped: s.dropped.Load(),
		Pending: pending + int64(s.spill.rows()),
	}
}

// Add queues rows; it never waits for PostgreSQL.
func (s *Sink) Add(rows ...Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = append(s.open, rows...)
	for len(s.open) >= s.cfg.BatchSize || (s.closed && len(s.open) > 0) {
		n := min(len(s.open), s.cfg.BatchSize)
		s.sealLocked(s.open[:n:n])
		s.open = append([]Row(nil), s.open[n:]...)
	}
}

// sealLocked queues a full or timed-out batch in memory, or on disk when
// memory is full; s.mu must be held.
func (s *Sink) sealLocked(rows []Row) {
	b := &batch{ID: uuid.New(), Rows: rows}
	if !s.closed && s.memoryRows+len(rows) <= s.cfg.MemoryRows {
		s.memory = append(s.memory, b)
		s.memoryRows += len(rows)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return
	}
	err := s.spill.put(b)
	if err == nil {
		s.spilled.Add(int64(len(rows)))
		return
	}
	s.dropped.Add(int64(len(rows)))
	// One line per episode of drops, not one per batch.
	if time.Since(s.lastDrop) > 10*time.Second {
		s.log.Error("dropping proxy log rows: memory and spill folder are full", "rows", len(rows),
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
	s.memory, s.memoryRows = nil, 0
	for _, b := range memory {
		s.sealLocked(b.Rows)
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
	if len(s.open) > 0 {
		s.sealLocked(s.open)
		s.open = nil
	}
}

// drain writes queued batches, retrying each until it is written; it
// returns false when ctx ended. The writer that reads the spill folder
// empties it first, so spilled rows do not starve behind steady traffic.
func (s *Sink) drain(ctx context.Context, spilled bool) bool {
	for {
		if spilled {
			b, err := s.spill.oldest()
			if err != nil {
				rows, qerr := s.spill.quarantine()
				s.dropped.Add(int64(rows))
				s.log.Error("unreadable spilled batch set aside as .bad; its rows are counted as dropped",
					"rows", rows, "err", errors.Join(err, qerr))
				continue
			}
			if b != nil {
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
	s.memoryRows -= len(b.Rows)
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

// write copies b into proxy_logs in one transaction with its marker; a
// batch whose marker is already there was committed before and is skipped.
func (s *Sink) write(ctx context.Context, b *batch) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var copied int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO proxy_log_batches (id) VALUES ($1) ON CONFLICT DO NOTHING`, b.ID)
		if err != nil {
			return fmt.Errorf("marking batch: %w", err)
		}
		if tag.RowsAffected() == 0 {
			s.log.Info("proxy log batch was already written; skipped", "batch", b.ID, "rows", len(b.Rows))
			return nil
		}
		copied, err = tx.CopyFrom(ctx, pgx.Identifier{"proxy_logs"}, Columns,
			pgx.CopyFromSlice(len(b.Rows), func(i int) ([]any, error) { return b.Rows[i].Values(), nil }))
		if err != nil {
			return fmt.Errorf("copying rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing batch %s of %d rows: %w", b.ID, len(b.Rows), err)
	}
	s.written.Add(copied)
	return nil
}
