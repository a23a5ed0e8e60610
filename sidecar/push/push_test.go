package push

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
	"github.com/nemesis-ml/nemesis/sidecar/push/pushtest"
)

func sample(i int) podmetric.Sample {
	return podmetric.Sample{ID: "models/resnet-0", RequestCount: float64(i), ReceivedAt: time.Unix(1_700_000_000+int64(i), 0).UTC()}
}

func start(t *testing.T, cfg Config) *Pusher {
	t.Helper()
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.MaxBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func TestBufferDropsTheOldestFirst(t *testing.T) {
	b := newBuffer(3)
	dropped := 0
	for i := range 5 {
		dropped += b.add(sample(i))
	}
	got, last := b.peek(10)
	if dropped != 2 || len(got) != 3 || got[0].RequestCount != 2 || got[2].RequestCount != 4 || last != 4 {
		t.Fatalf("dropped %d, kept %v (last seq %d); want 2 dropped and samples 2..4", dropped, got, last)
	}
	// A batch in flight while newer samples push older ones out: removing
	// it must not remove what came after it.
	batch, last := b.peek(2) // samples 2, 3
	b.add(sample(5))         // pushes sample 2 out
	b.removeThrough(last)
	got, _ = b.peek(10)
	if len(got) != 2 || got[0].RequestCount != 4 || got[1].RequestCount != 5 {
		t.Fatalf("after sending %v: buffer holds %v, want samples 4 and 5", batch, got)
	}
}

func TestAcceptedSamplesArriveInBatchesWithTheToken(t *testing.T) {
	rcv := pushtest.Start(t, "s3cret")
	p, err := New(Config{Controller: rcv.URL(), Token: "s3cret", BatchSize: 4, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Queued before Run starts: 10 samples go as batches of 4, 4 and 2.
	for i := range 10 {
		p.Add(sample(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	got := rcv.WaitFor(10, 10*time.Second)
	for i, s := range got {
		if s != sample(i) {
			t.Fatalf("sample %d arrived as %+v, want %+v", i, s, sample(i))
		}
	}
	if rcv.Posts() != 3 {
		t.Fatalf("%d POSTs, want 3 batches", rcv.Posts())
	}
	// The receiver has the samples before the pusher reads its answer and
	// counts them.
	testenv.Eventually(t, 5*time.Second, "the pushed counter to reach 10", func() error {
		if n := testutil.ToFloat64(p.pushed); n != 10 {
			return fmt.Errorf("pushed counter %v, want 10", n)
		}
		return nil
	})
}

func TestRejectedSamplesAreDroppedNotRetried(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			rcv := pushtest.Start(t, "")
			rcv.FailWith(status)
			p := start(t, Config{Controller: rcv.URL()})
			p.Add(sample(1))
			waitUntil(t, func() bool { return testutil.ToFloat64(p.dropped.WithLabelValues("rejected")) == 1 })
			time.Sleep(200 * time.Millisecond) // four backoffs' worth: a retry would show
			if rcv.Posts() != 1 || p.buf.len() != 0 {
				t.Fatalf("%d POSTs and %d buffered after a %d, want 1 and 0", rcv.Posts(), p.buf.len(), status)
			}
			// Later samples still go.
			rcv.FailWith(0)
			p.Add(sample(2))
			if got := rcv.WaitFor(1, 5*time.Second); got[0] != sample(2) {
				t.Fatalf("got %+v, want sample 2", got[0])
			}
		})
	}
}

func TestRetryableFailuresAreRetriedUntilAccepted(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusRequestTimeout} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			rcv := pushtest.Start(t, "")
			rcv.FailWith(status)
			p := start(t, Config{Controller: rcv.URL()})
			p.Add(sample(1))
			waitUntil(t, func() bool { return rcv.Posts() >= 3 })
			rcv.FailWith(0)
			if got := rcv.WaitFor(1, 5*time.Second); got[0] != sample(1) {
				t.Fatalf("got %+v, want sample 1", got[0])
			}
			if testutil.ToFloat64(p.failures) < 3 {
				t.Fatalf("failures counter %v, want at least 3", testutil.ToFloat64(p.failures))
			}
		})
	}
}

func TestBufferedWhileUnreachableThenSent(t *testing.T) {
	rcv := pushtest.Start(t, "")
	rcv.Stop() // connections refused
	reg := prometheus.NewRegistry()
	p := start(t, Config{Controller: rcv.URL(), BufferSize: 5, Registerer: reg})
	for i := range 8 {
		p.Add(sample(i))
	}
	waitUntil(t, func() bool { return testutil.ToFloat64(p.failures) >= 2 })
	rcv.Restart()
	got := rcv.WaitFor(5, 10*time.Second)
	// The three oldest made room for newer ones.
	for i, s := range got {
		if s != sample(i+3) {
			t.Fatalf("sample %d arrived as %+v, want %+v", i, s, sample(i+3))
		}
	}
	if n := testutil.ToFloat64(p.dropped.WithLabelValues("buffer_full")); n != 3 {
		t.Fatalf("buffer_full drops %v, want 3", n)
	}
}

func TestStoppingSendsWhatIsBuffered(t *testing.T) {
	rcv := pushtest.Start(t, "")
	rcv.FailWith(http.StatusServiceUnavailable)
	p, err := New(Config{Controller: rcv.URL(), MinBackoff: time.Hour, MaxBackoff: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	p.Add(sample(1))
	waitUntil(t, func() bool { return rcv.Posts() == 1 }) // now waiting an hour to retry
	rcv.FailWith(0)
	p.Add(sample(2))
	cancel()
	<-done
	if got := rcv.Samples(); len(got) != 2 {
		t.Fatalf("on stop the receiver got %v, want samples 1 and 2", got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
