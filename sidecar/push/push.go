// Package push sends a pod's samples to the controller's POST /metrics: in
// batches, with a bearer token, retrying with backoff while the controller
// is unreachable and holding samples meanwhile in a bounded buffer that
// drops the oldest first.
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// Config says where and how to push.
type Config struct {
	// Controller is the controller's base URL; samples go to its /metrics.
	Controller string
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// BatchSize caps the samples of one POST.
	BatchSize int
	// BufferSize caps the samples held while the controller does not take them.
	BufferSize int
	// Timeout bounds each POST.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed POSTs.
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
	Registerer             prometheus.Registerer
}

// Pusher sends the samples given to Add.
type Pusher struct {
	cfg    Config
	url    string
	client *http.Client
	buf    *buffer
	log    *slog.Logger

	pushed   prometheus.Counter
	dropped  *prometheus.CounterVec
	failures prometheus.Counter
}

// rejectedError is the controller refusing a batch as invalid: sending it
// again would fail again.
type rejectedError struct {
	status int
	body   string
}

func (e *rejectedError) Error() string {
	return fmt.Sprintf("controller rejected the samples with %d: %s", e.status, e.body)
}

// New returns a Pusher; Run sends what Add gives it.
func New(cfg Config) (*Pusher, error) {
	if cfg.Controller == "" {
		return nil, errors.New("no controller URL")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 600
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Pusher{
		cfg: cfg,
		url: strings.TrimSuffix(cfg.Controller, "/") + "/metrics",
		// The context of each POST carries the timeout; this one is a backstop.
		client: &http.Client{Timeout: cfg.Timeout},
		buf:    newBuffer(cfg.BufferSize),
		log:    cfg.Log,
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_sidecar_samples_pushed_total",
			Help: "Samples the controller accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_sidecar_samples_dropped_total",
			Help: "Samples given up: buffer_full (the oldest, while the controller was unreachable) or rejected (the controller answered 4xx).",
		}, []string{"reason"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_sidecar_push_failures_total",
			Help: "POSTs to the controller that failed and were retried.",
		}),
	}
	for _, reason := range []string{"buffer_full", "rejected"} {
		p.dropped.WithLabelValues(reason) // at zero, so that rate() sees the first
	}
	if cfg.Registerer != nil {
		buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nemesis_sidecar_push_buffered_samples",
			Help: "Samples waiting for the controller.",
		}, func() float64 { return float64(p.buf.len()) })
		for _, c := range []prometheus.Collector{p.pushed, p.dropped, p.failures, buffered} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering push metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Add queues a sample for sending. When the buffer is full the oldest
// sample goes.
func (p *Pusher) Add(s podmetric.Sample) {
	if n := p.buf.add(s); n > 0 {
		p.dropped.WithLabelValues("buffer_full").Add(float64(n))
	}
}

// Run sends queued samples until ctx ends, then tries once more, within the
// POST timeout, to send what is left.
func (p *Pusher) Run(ctx context.Context) {
	backoff := p.backoff()
	failing := 0
	for {
		batch, last := p.buf.peek(p.cfg.BatchSize)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.buf.ready:
				continue
			}
		}
		err := p.send(ctx, batch)
		var rejected *rejectedError
		switch {
		case err == nil:
			p.buf.removeThrough(last)
			p.pushed.Add(float64(len(batch)))
			if failing > 0 {
				p.log.Info("controller takes samples again", "url", p.url, "failedAttempts", failing, "buffered", p.buf.len())
				failing = 0
				backoff = p.backoff()
			}
			continue
		case errors.As(err, &rejected):
			p.buf.removeThrough(last)
			p.dropped.WithLabelValues("rejected").Add(float64(len(batch)))
			p.log.Error("controller rejected samples, dropping them", "url", p.url, "samples", len(batch), "status", rejected.status, "body", rejected.body)
			continue
		case ctx.Err() != nil:
			p.flush()
			return
		}
		p.failures.Inc()
		failing++
		wait := backoff.Step()
		if failing == 1 {
			p.log.Warn("pushing samples failed, retrying", "url", p.url, "err", err, "buffered", p.buf.len())
		} else {
			p.log.Debug("pushing samples failed, retrying", "url", p.url, "err", err, "buffered", p.buf.len(), "retryIn", wait)
		}
		select {
		case <-ctx.Done():
			p.flush()
			return
		case <-time.After(wait):
		}
	}
}

// flush sends what is buffered, in batches, within one POST timeout, so the
// samples of a pod's last seconds are not lost when it stops.
func (p *Pusher) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	for {
		batch, last := p.buf.peek(p.cfg.BatchSize)
		if len(batch) == 0 {
			return
		}
		if err := p.send(ctx, batch); err != nil {
			p.log.Warn("could not send the last samples", "url", p.url, "samples", p.buf.len(), "err", err)
			return
		}
		p.buf.removeThrough(last)
		p.pushed.Add(float64(len(batch)))
	}
}

func (p *Pusher) backoff() *wait.Backoff {
	return &wait.Backoff{Duration: p.cfg.MinBackoff, Factor: 2, Jitter: 0.2, Steps: math.MaxInt32, Cap: p.cfg.MaxBackoff}
}

// send POSTs one batch. It returns a *rejectedError when the controller
// refused the samples themselves (4xx other than 408 and 429), and any other
// error when sending again later may work.
func (p *Pusher) send(ctx context.Context, batch []podmetric.Sample) error {
	body, err := json.Marshal(batch)
	if err != nil {
		return &rejectedError{body: fmt.Sprintf("encoding samples: %v", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if p.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.Token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting samples: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests:
		return &rejectedError{status: s, body: strings.TrimSpace(string(msg))}
	default:
		return fmt.Errorf("controller answered %d: %s", s, strings.TrimSpace(string(msg)))
	}
}
