package command

import (
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/extproc/activator"
)

type decisionFlags struct {
	DecisionBuffer         int           `help:"Decision records kept in memory while PostgreSQL is unreachable; beyond it the oldest are dropped and counted." default:"10000" env:"NEMESIS_DECISION_BUFFER"`
	DecisionRetention      time.Duration `help:"Age after which decision records are deleted." default:"168h" env:"NEMESIS_DECISION_RETENTION"`
	DecisionRetentionEvery time.Duration `help:"How often old decision records are looked for." default:"10m" env:"NEMESIS_DECISION_RETENTION_EVERY"`
}

// decisionRecord is the parts of serve that keep the decision record.
type decisionRecord struct {
	writer    *decisions.Writer
	query     *decisions.Handler
	retention decisions.Retention
}

// released merges an activator's release into the decision record of the
// wake (routes are named namespace/name).
func (d *decisionRecord) released(r activator.Release) {
	namespace, name, _ := strings.Cut(r.Route, "/")
	d.writer.Released(decisions.Released{
		Namespace: namespace, Name: name, FirstHeld: r.FirstHeld, EndpointAcked: r.Ready, Released: r.Released, Held: r.Held,
	})
}

func (f decisionFlags) build(pool *pgxpool.Pool, reg prometheus.Registerer, log *slog.Logger) (*decisionRecord, error) {
	log = log.With("component", "decisions")
	w, err := decisions.NewWriter(pool, decisions.WriterConfig{Buffer: f.DecisionBuffer, FlushInterval: time.Second}, reg, log)
	if err != nil {
		return nil, err
	}
	return &decisionRecord{
		writer: w, query: decisions.NewHandler(pool, log),
		retention: decisions.Retention{Pool: pool, MaxAge: f.DecisionRetention, Interval: f.DecisionRetentionEvery, Log: log},
	}, nil
}
