package console

import (
	"fmt"
	"time"

	"github.com/nemesis-ml/nemesis/controller/decisions"
)

// WakeStage is one stretch of a wake from zero, between two of the times
// its record holds.
type WakeStage struct {
	// Name is the stage's end ("pod ready"), Class its short name for the
	// bar's colour.
	Name, Class string
	From, To    time.Time
	// AtMillis is when the stage ended, in milliseconds after the first
	// time the wake recorded (its first held request).
	AtMillis int64
	// Width is the stage's share of the whole wake in percent, for the bar.
	Width string
}

// Millis is the stage's length in milliseconds.
func (s WakeStage) Millis() int64 { return s.To.Sub(s.From).Milliseconds() }

// wakeStages splits a wake into the stretches between the times it
// recorded, in the record's order: a time not recorded (a wake still under
// way, a pod the controller's watch did not see) joins its two neighbours'
// stretch. A stretch shorter than zero (times from different clocks) is
// drawn empty.
func wakeStages(w *decisions.Wake) []WakeStage {
	if w == nil {
		return nil
	}
	marks := []struct {
		name, class string
		at          time.Time
	}{
		{"request held", "held", w.RequestHeld},
		{"decided", "decided", w.Decided},
		{"scale written", "scaled", w.ScaleWritten},
		{"pod created", "created", w.PodCreated},
		{"pod ready", "ready", w.PodReady},
		{"endpoint ACKed", "acked", w.EndpointAcked},
		{"released", "released", w.Released},
	}
	var out []WakeStage
	var first, prev time.Time
	for _, m := range marks {
		if m.at.IsZero() {
			continue
		}
		if first.IsZero() {
			first = m.at
		} else {
			out = append(out, WakeStage{Name: m.name, Class: m.class, From: prev, To: m.at, AtMillis: m.at.Sub(first).Milliseconds()})
		}
		prev = m.at
	}
	var total time.Duration
	for _, s := range out {
		total += max(s.To.Sub(s.From), 0)
	}
	for i := range out {
		share := 0.0
		if total > 0 {
			share = 100 * float64(max(out[i].To.Sub(out[i].From), 0)) / float64(total)
		}
		out[i].Width = fmt.Sprintf("%.2f", share)
	}
	return out
}
