package console

import (
	"time"
)

// Change is one applied scale of an autoscaler's target: at Time its
// replicas went from From to To. Dry-run decisions are not changes.
type Change struct {
	Time     time.Time
	From, To int32
}

// ReplicaTime is what an autoscaler's replicas added up to over a period.
type ReplicaTime struct {
	// ReplicaSeconds is replicas integrated over the period.
	ReplicaSeconds float64
	// ZeroSeconds is how long the target had no replica.
	ZeroSeconds float64
}

// replicaTime integrates the replicas over [since, until), taking them as
// constant between changes (pure). before is the replicas when the period
// began: the last change's To before since, or nil when the record has
// none, in which case the first change's From stands for it. Changes are
// in time order; those before since only set the starting replicas, those
// from until on are ignored. With neither a starting count nor a change
// the period is unknown: ok is false.
func replicaTime(before *int32, changes []Change, since, until time.Time) (rt ReplicaTime, ok bool) {
	var level int32
	switch {
	case before != nil:
		level = *before
	case len(changes) > 0:
		level = changes[0].From
	default:
		return ReplicaTime{}, false
	}
	add := func(from, to time.Time) {
		if !to.After(from) {
			return
		}
		s := to.Sub(from).Seconds()
		rt.ReplicaSeconds += float64(level) * s
		if level == 0 {
			rt.ZeroSeconds += s
		}
	}
	at := since
	for _, c := range changes {
		if !c.Time.Before(until) {
			break
		}
		if c.Time.After(at) {
			add(at, c.Time)
			at = c.Time
		}
		level = c.To
	}
	add(at, until)
	return rt, true
}
