package rules

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
)

// maxRecommendations bounds the history kept in the status (the CRD's
// MaxItems); older entries are dropped first.
const maxRecommendations = 64

// record appends the recommendation when it differs from the one in force
// and drops entries that no window can see any more. An entry is in force
// from its time until the next entry's, so the one just before the longest
// window's start is kept: it is in force when that window starts.
func record(history []v1alpha1.Recommendation, now time.Time, replicas int32, longest time.Duration) []v1alpha1.Recommendation {
	out := make([]v1alpha1.Recommendation, 0, len(history)+1)
	cutoff := now.Add(-longest)
	for i, r := range history {
		if i+1 < len(history) && !history[i+1].Time.After(cutoff) {
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 || out[len(out)-1].Replicas != replicas {
		out = append(out, v1alpha1.Recommendation{Time: metav1.NewMicroTime(now), Replicas: replicas})
	}
	if len(out) > maxRecommendations {
		out = out[len(out)-maxRecommendations:]
	}
	return out
}

// extreme returns the highest (or lowest) recommendation in force during the
// window (now-win, now], and how long until the oldest of them leaves it.
// When the history does not reach back to the window's start, current was
// in force then: a controller that just started, or lost its history, does
// not move until it has watched a whole window.
func extreme(history []v1alpha1.Recommendation, now time.Time, win time.Duration, current int32, highest bool) (int32, time.Duration) {
	start := now.Add(-win)
	better := func(a, b int32) bool { return a < b }
	if highest {
		better = func(a, b int32) bool { return a > b }
	}
	best := current
	first := len(history)
	for i, r := range history {
		if r.Time.After(start) {
			first = i
			break
		}
	}
	if first > 0 {
		best = history[first-1].Replicas
	}
	for _, r := range history[first:] {
		if better(r.Replicas, best) {
			best = r.Replicas
		}
	}
	recheck := win
	if first < len(history) {
		recheck = history[first].Time.Add(win).Sub(now)
	}
	return best, recheck
}
