package activation

import (
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

func TestLocalKeepsTheLatestWakeAndNeverBlocks(t *testing.T) {
	l := NewLocal()
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if got := l.Latest("ns", "a"); !got.IsZero() {
		t.Fatalf("latest before any wake: %v", got)
	}
	// Far more notes than the channel holds, with nobody reading, as on a
	// replica that is not elected.
	for i := range 1000 {
		l.Note("ns", "a", t0.Add(time.Duration(i)*time.Millisecond))
	}
	l.Note("ns", "a", t0) // an older one arriving late changes nothing
	if got, want := l.Latest("ns", "a"), t0.Add(999*time.Millisecond); !got.Equal(want) {
		t.Fatalf("latest %v, want %v", got, want)
	}
	if got := len(l.Events()); got != cap(l.events) {
		t.Fatalf("%d events queued, want the channel full (%d)", got, cap(l.events))
	}
	ev := <-l.Events()
	if ev.Object.GetNamespace() != "ns" || ev.Object.GetName() != "a" {
		t.Fatalf("event for %s/%s", ev.Object.GetNamespace(), ev.Object.GetName())
	}

	// Wakes older than the lease are forgotten when another comes.
	l.Note("ns", "b", t0.Add(v1alpha1.ActivationLease+time.Second))
	if got := l.Latest("ns", "a"); !got.IsZero() {
		t.Fatalf("a wake past its lease is still kept: %v", got)
	}
	if got := l.Latest("ns", "b"); got.IsZero() {
		t.Fatal("the new wake is not kept")
	}
}
