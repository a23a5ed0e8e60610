package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	kvalidation "k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

// seriesSpan is how far back the replica chart looks.
const seriesSpan = 24 * time.Hour

// Detail is one autoscaler's page.
type Detail struct {
	Autoscaler
	Spec       v1alpha1.CustomAutoscalerSpec `json:"spec"`
	Conditions []metav1.Condition            `json:"conditions"`
	Pods       []Pod                         `json:"pods"`
	// Series is the replica count over the last day: each applied scale's
	// result, oldest first.
	Series []Point `json:"replica_series"`
	// Metrics are, per rule threshold, the aggregates the recorded
	// decisions of the last day saw (the newest 2,000 decisions').
	Metrics   []MetricSeries     `json:"metric_series"`
	Decisions []decisions.Record `json:"decisions"`
	// Events are the Kubernetes events about the autoscaler, newest
	// first (the API server keeps them an hour by default).
	Events []Event `json:"events"`
}

// Event is one Kubernetes event about the autoscaler.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Reason string    `json:"reason"`
	Note   string    `json:"note"`
	Count  int32     `json:"count"`
}

// eventsShown is how many events the page lists.
const eventsShown = 50

// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=list

// events lists the events the controller recorded about ca, newest first.
func (c *Console) events(ctx context.Context, ca *v1alpha1.CustomAutoscaler) ([]Event, error) {
	var list eventsv1.EventList
	err := c.cfg.Kube.List(ctx, &list, client.InNamespace(ca.Namespace), client.MatchingFieldsSelector{
		Selector: fields.SelectorFromSet(fields.Set{"regarding.kind": "CustomAutoscaler", "regarding.name": ca.Name}),
	})
	if err != nil {
		return nil, fmt.Errorf("listing events of %s/%s: %w", ca.Namespace, ca.Name, err)
	}
	out := make([]Event, 0, len(list.Items))
	for _, e := range list.Items {
		ev := Event{Time: e.EventTime.Time, Type: e.Type, Reason: e.Reason, Note: e.Note, Count: 1}
		if e.Series != nil {
			ev.Time, ev.Count = e.Series.LastObservedTime.Time, e.Series.Count
		}
		if ev.Time.IsZero() {
			ev.Time = e.CreationTimestamp.Time
		}
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b Event) int { return b.Time.Compare(a.Time) })
	return out[:min(len(out), eventsShown)], nil
}

// MetricSeries is one threshold of one rule against the values seen.
type MetricSeries struct {
	Rule      string        `json:"rule"`
	Metric    string        `json:"metric"`
	Operator  string        `json:"operator"`
	Threshold float64       `json:"threshold"`
	Points    []MetricPoint `json:"points"`
}

// MetricPoint is the window's aggregate at one decision.
type MetricPoint struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

// Point is the replica count from Time on.
type Point struct {
	Time     time.Time `json:"time"`
	Replicas int32     `json:"replicas"`
}

// Pod is one of the target's pods.
type Pod struct {
	Name    string    `json:"name"`
	Phase   string    `json:"phase"`
	Ready   bool      `json:"ready"`
	Created time.Time `json:"created"`
}

// ColdStarts are the wakes from zero among the decisions shown.
func (d *Detail) ColdStarts() []decisions.Record {
	var out []decisions.Record
	for _, r := range d.Decisions {
		if r.Wake != nil {
			out = append(out, r)
		}
	}
	return out
}

var errNotFound = errors.New("no such autoscaler")

func (c *Console) detail(ctx context.Context, namespace, name string) (*Detail, error) {
	// A name Kubernetes refuses names no autoscaler; the API server would
	// answer it with an error that is not "not found".
	if len(kvalidation.IsDNS1123Label(namespace)) > 0 || len(kvalidation.IsDNS1123Subdomain(name)) > 0 {
		return nil, errNotFound
	}
	ca := &v1alpha1.CustomAutoscaler{}
	if err := c.cfg.Kube.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, ca); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errNotFound
		}
		return nil, fmt.Errorf("reading autoscaler %s/%s: %w", namespace, name, err)
	}
	traffic, err := c.traffic(ctx, namespace+"/"+name)
	if err != nil {
		return nil, err
	}
	d := &Detail{Autoscaler: row(ca, traffic, c.held()), Spec: ca.Spec, Conditions: ca.Status.Conditions}
	if d.Pods, err = c.pods(ctx, ca); err != nil {
		return nil, err
	}
	if d.Series, err = c.replicaSeries(ctx, namespace, name); err != nil {
		return nil, err
	}
	if d.Metrics, err = c.metricSeries(ctx, ca); err != nil {
		return nil, err
	}
	if d.Events, err = c.events(ctx, ca); err != nil {
		return nil, err
	}
	q, _ := decisions.Parse(namespace, name, nil)
	q.Limit = 50
	if d.Decisions, _, err = c.cfg.Decisions.Page(ctx, q); err != nil {
		return nil, fmt.Errorf("reading decisions of %s/%s: %w", namespace, name, err)
	}
	return d, nil
}

func (c *Console) pods(ctx context.Context, ca *v1alpha1.CustomAutoscaler) ([]Pod, error) {
	out := []Pod{}
	selector, err := labels.Parse(ca.Status.Selector)
	if err != nil || ca.Status.Selector == "" {
		return out, nil
	}
	list := &corev1.PodList{}
	if err := c.cfg.Kube.List(ctx, list, client.InNamespace(ca.Namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return nil, fmt.Errorf("listing pods of %s/%s: %w", ca.Namespace, ca.Name, err)
	}
	for _, p := range list.Items {
		pod := Pod{Name: p.Name, Phase: string(p.Status.Phase), Created: p.CreationTimestamp.UTC()}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				pod.Ready = cond.Status == corev1.ConditionTrue
			}
		}
		out = append(out, pod)
	}
	return out, nil
}

// replicaSeries is the result of every applied scale of the last day.
func (c *Console) replicaSeries(ctx context.Context, namespace, name string) ([]Point, error) {
	rows, err := c.cfg.Pool.Query(ctx, `SELECT time, to_replicas FROM scaling_decisions
		WHERE namespace = $1 AND name = $2 AND time >= $3 AND to_replicas <> from_replicas AND NOT dry_run
		ORDER BY time, id LIMIT 10000`, namespace, name, time.Now().Add(-seriesSpan))
	if err != nil {
		return nil, fmt.Errorf("reading the replica series of %s/%s: %w", namespace, name, err)
	}
	defer rows.Close()
	out := []Point{}
	for rows.Next() {
		var p Point
		if err := rows.Scan(&p.Time, &p.Replicas); err != nil {
			return nil, fmt.Errorf("reading the replica series of %s/%s: %w", namespace, name, err)
		}
		p.Time = p.Time.UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// metricSeries gathers each threshold's aggregates from the decisions of
// the last day, for the thresholds the spec has now.
func (c *Console) metricSeries(ctx context.Context, ca *v1alpha1.CustomAutoscaler) ([]MetricSeries, error) {
	var out []MetricSeries
	index := map[string]int{}
	for _, r := range ca.Spec.Rules {
		for _, t := range r.Thresholds {
			index[r.ID+"|"+string(t.MetricType)] = len(out)
			out = append(out, MetricSeries{Rule: r.ID, Metric: string(t.MetricType), Operator: string(t.Operator), Threshold: t.Value, Points: []MetricPoint{}})
		}
	}
	// The values are taken out in SQL: decoding every record's inputs here
	// would cost the page most of its time.
	rows, err := c.cfg.Pool.Query(ctx, `SELECT d.time, i->>'rule', i->>'metric', (i->>'value')::float8
		FROM (SELECT time, id, inputs FROM scaling_decisions WHERE namespace = $1 AND name = $2 AND time >= $3
			ORDER BY time DESC, id DESC LIMIT 2000) AS d, jsonb_array_elements(d.inputs) AS i
		WHERE jsonb_typeof(i->'value') = 'number' ORDER BY d.time, d.id`,
		ca.Namespace, ca.Name, time.Now().Add(-seriesSpan))
	if err != nil {
		return nil, fmt.Errorf("reading the metric series of %s/%s: %w", ca.Namespace, ca.Name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p MetricPoint
		var rule, metric string
		if err := rows.Scan(&p.Time, &rule, &metric, &p.Value); err != nil {
			return nil, fmt.Errorf("reading the metric series of %s/%s: %w", ca.Namespace, ca.Name, err)
		}
		if i, ok := index[rule+"|"+metric]; ok {
			p.Time = p.Time.UTC()
			out[i].Points = append(out[i].Points, p)
		}
	}
	return out, rows.Err()
}

func (c *Console) autoscalerJSON(w http.ResponseWriter, r *http.Request) {
	d, err := c.detail(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	switch {
	case errors.Is(err, errNotFound):
		httpjson.WriteError(w, http.StatusNotFound, "name", err.Error())
	case err != nil:
		c.unavailable(w, err)
	default:
		httpjson.Write(w, http.StatusOK, d)
	}
}

func (c *Console) autoscalerPage(w http.ResponseWriter, r *http.Request) {
	d, err := c.detail(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	switch {
	case errors.Is(err, errNotFound):
		c.fail(w, r, http.StatusNotFound, fmt.Sprintf("No autoscaler %s/%s.", r.PathValue("namespace"), r.PathValue("name")))
	case err != nil:
		c.cfg.Log.Error("console autoscaler", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
	default:
		c.render(w, r, http.StatusOK, "autoscaler", page{Title: d.Namespace + "/" + d.Name, Nav: "fleet", Data: d})
	}
}
