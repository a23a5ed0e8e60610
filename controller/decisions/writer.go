package decisions

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// WriterConfig bounds what the writer keeps while PostgreSQL is away.
type WriterConfig struct {
	// Buffer is the most records kept unwritten; beyond it the oldest are
	// dropped and counted.
	Buffer int
	// FlushInterval is the longest a record waits, and how often a failed
	// write is tried again.
	FlushInterval time.Duration
}

// Writer writes records in the background. Record never blocks the
// reconcile that calls it: records wait in memory while PostgreSQL is
// down, and the oldest are dropped (nemesis_scaling_decisions_dropped_total)
// once Buffer of them wait; should more than 1024 arrive during one write,
// the newest are dropped at the door, counted the same.
type Writer struct {
	pool    *pgxpool.Pool
	cfg     WriterConfig
	log     *slog.Logger
	in      chan item
	written prometheus.Counter
	dropped prometheus.Counter
}

// NewWriter returns a writer whose counters are registered in reg.
func NewWriter(pool *pgxpool.Pool, cfg WriterConfig, reg prometheus.Registerer, log *slog.Logger) (*Writer, error) {
	if cfg.Buffer < 1 || cfg.FlushInterval <= 0 {
		return nil, fmt.Errorf("decision writer: buffer and flush interval must be positive")
	}
	w := &Writer{
		pool: pool, cfg: cfg, log: log, in: make(chan item, 1024),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_scaling_decisions_written_total", Help: "Decision records, and wakes' release stages merged into them, written to PostgreSQL.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_scaling_decisions_dropped_total",
			Help: "Decision records dropped unwritten: more were waiting for PostgreSQL than the buffer holds.",
		}),
	}
	for _, c := range []prometheus.Collector{w.written, w.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering decision writer metrics: %w", err)
		}
	}
	return w, nil
}

// item is a record to insert, or a release or a pod's stages to merge into
// its wake's record.
type item struct {
	record   *Record
	released *Released
	pod      *PodStages
}

// Record queues r for writing; it drops r (and counts it) rather than wait.
func (w *Writer) Record(r Record) { w.queue(item{record: &r}) }

// Released queues the activator's stages of a wake, merged into the latest
// wake record of the autoscaler written before the release (the controller
// records its decision first: the release waits for the scale it made).
func (w *Writer) Released(r Released) { w.queue(item{released: &r}) }

// PodStages queues the stages of a wake's pod, merged into the wake record
// the controller wrote at p.Decided.
func (w *Writer) PodStages(p PodStages) { w.queue(item{pod: &p}) }

func (w *Writer) queue(it item) {
	select {
	case w.in <- it:
	default:
		w.dropped.Inc()
	}
}

// Run writes queued records until ctx ends, then tries once more to write
// what is left.
func (w *Writer) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.FlushInterval)
	defer t.Stop()
	var pending []item
	for {
		select {
		case r := <-w.in:
			pending = append(pending, r)
			if len(pending) < 100 {
				continue
			}
		case <-t.C:
		case <-ctx.Done():
			w.final(w.drain(pending))
			return nil
		}
		pending = w.drain(pending)
		if len(pending) == 0 {
			continue
		}
		if err := w.insert(ctx, pending); err != nil {
			if over := len(pending) - w.cfg.Buffer; over > 0 {
				w.dropped.Add(float64(over))
				pending = append(pending[:0], pending[over:]...)
			}
			w.log.Warn("writing decision records, keeping them to retry", "waiting", len(pending), "err", err)
			continue
		}
		pending = pending[:0]
	}
}

// final writes what is left at shutdown, with a short grace.
func (w *Writer) final(pending []item) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.insert(ctx, pending); err != nil {
		w.dropped.Add(float64(len(pending)))
		w.log.Warn("decision records lost at shutdown", "records", len(pending), "err", err)
	}
}

// drain moves what is queued into pending without waiting.
func (w *Writer) drain(pending []item) []item {
	for {
		select {
		case r := <-w.in:
			pending = append(pending, r)
		default:
			return pending
		}
	}
}

func (w *Writer) insert(ctx context.Context, items []item) error {
	if len(items) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, it := range items {
			if rel := it.released; rel != nil {
				b.Queue(mergeReleased, rel.Namespace, rel.Name, rel.Released, map[string]any{
					"request_held": rel.FirstHeld, "endpoint_acked": rel.EndpointAcked, "released": rel.Released, "held_requests": rel.Held,
				})
				continue
			}
			if p := it.pod; p != nil {
				b.Queue(mergePod, p.Namespace, p.Name, p.Decided, podStages(p))
				continue
			}
			r := it.record
			b.Queue(`INSERT INTO scaling_decisions
				(namespace, name, time, from_replicas, to_replicas, action, rule, reason, limited_by, dry_run, inputs, wake)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
				r.Namespace, r.Name, r.Time, r.From, r.To, r.Action, r.Rule, r.Reason, r.LimitedBy, r.DryRun, inputsOrEmpty(r.Inputs), r.Wake)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("writing %d decision records: %w", len(items), err)
	}
	w.written.Add(float64(len(items)))
	return nil
}

// mergeReleased adds the activator's stages to the autoscaler's latest wake
// record from before the release. A release whose decision is not recorded
// (the controller's replica lost it) changes nothing.
const mergeReleased = `UPDATE scaling_decisions SET wake = ` + readyByAck + `
	WHERE id = (SELECT id FROM scaling_decisions
		WHERE namespace = $1 AND name = $2 AND wake IS NOT NULL AND time <= $3
		ORDER BY time DESC, id DESC LIMIT 1)`

// mergePod adds a pod's stages to the wake record decided at $3.
const mergePod = `UPDATE scaling_decisions SET wake = ` + readyByAck + `
	WHERE namespace = $1 AND name = $2 AND time = $3 AND wake IS NOT NULL`

// readyByAck is the wake merged with $4, its pod ready no later than the
// endpoint ACK: Envoy gets a ready endpoint only for a ready pod, so a pod
// watch that heard of the readiness after Envoy ACKed the endpoint was the
// slower of the two (the local runtime writes the EndpointSlice before the
// pod's status), and the ACK is the better bound.
const readyByAck = `(SELECT CASE WHEN m ? 'pod_ready' AND m ? 'endpoint_acked'
		AND (m->>'endpoint_acked')::timestamptz <= (m->>'pod_ready')::timestamptz
	THEN m || jsonb_build_object('pod_ready', m->'endpoint_acked') ELSE m END
	FROM (SELECT wake || $4::jsonb AS m) AS merged)`

// podStages is what mergePod merges: the creation alone, then both.
func podStages(p *PodStages) map[string]any {
	m := map[string]any{"pod": p.Pod, "pod_created": p.Created}
	if !p.Ready.IsZero() {
		m["pod_ready"] = p.Ready
	}
	return m
}

func inputsOrEmpty(in []Input) []Input {
	if in == nil {
		return []Input{}
	}
	return in
}
