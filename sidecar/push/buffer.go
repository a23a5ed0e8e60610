package push

import (
	"sync"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// buffer holds the samples not yet accepted, oldest first, up to max of
// them. Each sample gets a sequence number so that a batch in flight can be
// removed even if newer samples pushed older ones out meanwhile.
type buffer struct {
	mu      sync.Mutex
	items   []entry
	max     int
	nextSeq uint64
	// ready has a value when samples were added since the sender last looked.
	ready chan struct{}
}

type entry struct {
	seq    uint64
	sample podmetric.Sample
}

func newBuffer(max int) *buffer {
	return &buffer{max: max, ready: make(chan struct{}, 1)}
}

// add appends s and returns how many of the oldest samples it pushed out.
func (b *buffer) add(s podmetric.Sample) (dropped int) {
	b.mu.Lock()
	b.items = append(b.items, entry{seq: b.nextSeq, sample: s})
	b.nextSeq++
	if over := len(b.items) - b.max; over > 0 {
		b.items = append(b.items[:0], b.items[over:]...)
		dropped = over
	}
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return dropped
}

// peek returns up to n of the oldest samples and the sequence number of the
// last of them.
func (b *buffer) peek(n int) ([]podmetric.Sample, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(n, len(b.items))
	if n == 0 {
		return nil, 0
	}
	out := make([]podmetric.Sample, n)
	for i, e := range b.items[:n] {
		out[i] = e.sample
	}
	return out, b.items[n-1].seq
}

// removeThrough removes the samples up to and including sequence number last.
func (b *buffer) removeThrough(last uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := 0
	for i < len(b.items) && b.items[i].seq <= last {
		i++
	}
	b.items = append(b.items[:0], b.items[i:]...)
}

func (b *buffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items)
}
