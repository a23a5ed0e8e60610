package console

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// trafficWindow is how far back the fleet's request figures look: the
// current minute and the four before it.
const trafficWindow = 5 * time.Minute

// States of an autoscaler, as the fleet shows them.
const (
	StateAtZero      = "at zero"
	StateWaking      = "waking"
	StateSteady      = "steady"
	StateScalingUp   = "scaling up"
	StateScalingDown = "scaling down"
	StateAtMax       = "at max"
	StateError       = "error"
)

// Autoscaler is one row of the fleet.
type Autoscaler struct {
	Namespace string  `json:"namespace"`
	Name      string  `json:"name"`
	State     string  `json:"state"`
	Replicas  int32   `json:"replicas"`
	Desired   int32   `json:"desired_replicas"`
	Min       int32   `json:"min_replicas"`
	Max       int32   `json:"max_replicas"`
	DryRun    bool    `json:"dry_run"`
	Traffic   Traffic `json:"traffic"`
	// HeldRequests is how many of its requests this serve replica's
	// activator holds now (each replica knows only its own).
	HeldRequests int                `json:"held_requests"`
	LastDecision *v1alpha1.Decision `json:"last_decision,omitempty"`
	// Problem is the failing condition's message when State is error.
	Problem string `json:"problem,omitempty"`
}

// Traffic is what the proxy logs say of an autoscaler's route lately.
type Traffic struct {
	WindowSeconds     int     `json:"window_seconds"`
	Requests          int64   `json:"requests"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	// P95LatencyMS is the upper edge of the latency bucket holding the 95th
	// percentile (the rollups keep buckets, not rows); nil without
	// latencies or above the last edge.
	P95LatencyMS *float64 `json:"p95_latency_ms"`
	// ErrorRate is the share of 5xx answers; nil without requests.
	ErrorRate *float64 `json:"error_rate"`
}

// State says what an autoscaler is doing, from its status.
func State(ca *v1alpha1.CustomAutoscaler) (state, problem string) {
	st := ca.Status
	if c := meta.FindStatusCondition(st.Conditions, "AbleToScale"); c != nil && c.Status == metav1.ConditionFalse {
		return StateError, c.Message
	}
	if c := meta.FindStatusCondition(st.Conditions, "ScalingActive"); c != nil && c.Status == metav1.ConditionFalse {
		switch c.Reason {
		case "ScaledToZero", "Holding", "Scaling":
		default:
			return StateError, c.Message
		}
	}
	switch {
	case st.Replicas == 0 && st.DesiredReplicas == 0:
		return StateAtZero, ""
	case st.Replicas == 0:
		return StateWaking, ""
	case st.DesiredReplicas > st.Replicas:
		return StateScalingUp, ""
	case st.DesiredReplicas < st.Replicas:
		return StateScalingDown, ""
	case st.Replicas >= ca.Spec.MaxReplicas:
		return StateAtMax, ""
	}
	return StateSteady, ""
}

func row(ca *v1alpha1.CustomAutoscaler, traffic map[string]Traffic, held map[string]int) Autoscaler {
	state, problem := State(ca)
	route := ca.Namespace + "/" + ca.Name
	t, ok := traffic[route]
	if !ok {
		t = Traffic{WindowSeconds: int(trafficWindow.Seconds())}
	}
	return Autoscaler{
		Namespace: ca.Namespace, Name: ca.Name, State: state, Problem: problem,
		Replicas: ca.Status.Replicas, Desired: ca.Status.DesiredReplicas, Min: ca.Spec.MinReplicas, Max: ca.Spec.MaxReplicas,
		DryRun: ca.Spec.DryRun, Traffic: t, HeldRequests: held[route], LastDecision: ca.Status.LastDecision,
	}
}

// held is what the activator holds now, per route.
func (c *Console) held() map[string]int {
	if c.cfg.Held == nil {
		return nil
	}
	return c.cfg.Held.Held()
}

// fleet lists every CustomAutoscaler with its traffic.
func (c *Console) fleet(ctx context.Context) ([]Autoscaler, error) {
	list := &v1alpha1.CustomAutoscalerList{}
	if err := c.cfg.Kube.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing autoscalers: %w", err)
	}
	traffic, err := c.traffic(ctx, "")
	if err != nil {
		return nil, err
	}
	held := c.held()
	out := make([]Autoscaler, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, row(&list.Items[i], traffic, held))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// traffic sums the per-minute rollups (proxy_log_minutes) of the current
// minute and the four before by route (an autoscaler's route is named
// namespace/name), or of one route: a few rows per route, however busy.
func (c *Console) traffic(ctx context.Context, route string) (map[string]Traffic, error) {
	now := time.Now().UTC()
	start := now.Truncate(time.Minute).Add(-(trafficWindow - time.Minute))
	window := now.Sub(start)
	rows, err := c.cfg.Pool.Query(ctx, `SELECT route, sum(requests), sum(errors),
			ARRAY(SELECT sum(b) FROM proxy_log_minutes m2, unnest(m2.latency_buckets) WITH ORDINALITY AS u(b, i)
				WHERE m2.route = m.route AND m2.minute >= $1 GROUP BY i ORDER BY i)
		FROM proxy_log_minutes m WHERE minute >= $1 AND ($2 = '' OR route = $2) GROUP BY route`, start, route)
	if err != nil {
		return nil, fmt.Errorf("summing proxy log minutes: %w", err)
	}
	defer rows.Close()
	out := map[string]Traffic{}
	for rows.Next() {
		var name string
		var n, errors int64
		var buckets []int64
		if err := rows.Scan(&name, &n, &errors, &buckets); err != nil {
			return nil, fmt.Errorf("summing proxy log minutes: %w", err)
		}
		rate := float64(errors) / float64(n)
		out[name] = Traffic{
			WindowSeconds: int(window.Seconds()), Requests: n,
			RequestsPerSecond: float64(n) / window.Seconds(), P95LatencyMS: percentileBound(buckets, 0.95), ErrorRate: &rate,
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("summing proxy log minutes: %w", err)
	}
	return out, nil
}

// percentileBound is the upper edge of the latency bucket (latencyEdges)
// that holds the p-th quantile of the counts; nil when there are none or
// it is the open bucket above the last edge.
func percentileBound(buckets []int64, p float64) *float64 {
	var total int64
	for _, b := range buckets {
		total += b
	}
	if total == 0 {
		return nil
	}
	var seen int64
	for i, b := range buckets {
		seen += b
		if float64(seen) >= p*float64(total) {
			if i >= len(latencyEdges) {
				return nil
			}
			edge := float64(latencyEdges[i])
			return &edge
		}
	}
	return nil
}

func (c *Console) fleetJSON(w http.ResponseWriter, r *http.Request) {
	list, err := c.fleet(r.Context())
	if err != nil {
		c.unavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, list)
}

func (c *Console) fleetPage(w http.ResponseWriter, r *http.Request) {
	list, err := c.fleet(r.Context())
	if err != nil {
		c.cfg.Log.Error("console fleet", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "fleet", page{Title: "Fleet", Nav: "fleet", Data: list})
}

func (c *Console) unavailable(w http.ResponseWriter, err error) {
	c.cfg.Log.Error("console data", "err", err)
	httpjson.WriteError(w, http.StatusServiceUnavailable, "", err.Error())
}
