package console

import (
	"testing"
	"time"
)

func TestReplicaTime(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until := since.Add(24 * time.Hour)
	at := func(h float64) time.Time { return since.Add(time.Duration(h * float64(time.Hour))) }
	n := func(v int32) *int32 { return &v }
	for name, tc := range map[string]struct {
		before  *int32
		changes []Change
		unknown bool
		// hours of replicas and hours at zero
		replicaHours, zeroHours float64
	}{
		"no decision ever": {unknown: true},
		"no decision in the period, two replicas before": {
			before: n(2), replicaHours: 48,
		},
		"at zero the whole period": {
			before: n(0), zeroHours: 24,
		},
		"period starts mid-interval": {
			// 3 replicas since before the period, 1 from 06:00, 0 from 18:00.
			before:       n(3),
			changes:      []Change{{at(6), 3, 1}, {at(18), 1, 0}},
			replicaHours: 3*6 + 1*12, zeroHours: 6,
		},
		"nothing before: the first change's from stands for the start": {
			changes:      []Change{{at(12), 0, 4}},
			replicaHours: 4 * 12, zeroHours: 12,
		},
		"a wake and a scale to zero": {
			before:       n(0),
			changes:      []Change{{at(1), 0, 1}, {at(1.5), 1, 2}, {at(3), 2, 0}},
			replicaHours: 0.5 + 2*1.5, zeroHours: 1 + 21,
		},
		"changes at the very start and at until": {
			before:       n(5),
			changes:      []Change{{since, 5, 2}, {until, 2, 7}},
			replicaHours: 48,
		},
		"two changes at the same time: the last one holds": {
			before:       n(1),
			changes:      []Change{{at(12), 1, 0}, {at(12), 0, 3}},
			replicaHours: 12 + 36,
		},
		"a change before since only sets the start": {
			before:       n(9),
			changes:      []Change{{at(-1), 9, 0}},
			zeroHours:    24,
			replicaHours: 0,
		},
	} {
		t.Run(name, func(t *testing.T) {
			rt, ok := replicaTime(tc.before, tc.changes, since, until)
			if ok == tc.unknown {
				t.Fatalf("ok %v, want %v", ok, !tc.unknown)
			}
			if got, want := rt.ReplicaSeconds/3600, tc.replicaHours; got != want {
				t.Errorf("replica-hours %v, want %v", got, want)
			}
			if got, want := rt.ZeroSeconds/3600, tc.zeroHours; got != want {
				t.Errorf("hours at zero %v, want %v", got, want)
			}
		})
	}
}
