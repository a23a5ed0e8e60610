// Package decisions is the decision record: the controller's scaling
// decisions (and the evaluations a limit held back) in PostgreSQL's
// scaling_decisions, written off the reconcile path, served at
// GET /autoscalers/{namespace}/{name}/decisions and deleted after a
// retention age.
package decisions

import (
	"time"
)

// Record is one decision with the inputs the controller used.
type Record struct {
	ID        int64     `json:"id"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Time      time.Time `json:"time"`
	From      int32     `json:"from_replicas"`
	To        int32     `json:"to_replicas"`
	Action    string    `json:"action"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason"`
	// LimitedBy is what held the result back from what the rule asked: one
	// of the rules package's limits, "dry_run", or empty.
	LimitedBy string  `json:"limited_by"`
	DryRun    bool    `json:"dry_run"`
	Inputs    []Input `json:"inputs"`
	Wake      *Wake   `json:"wake,omitempty"`
}

// Input is one threshold of one rule as the evaluation saw it.
type Input struct {
	Rule     string `json:"rule"`
	Metric   string `json:"metric"`
	Operator string `json:"operator"`
	// Value is the window's aggregate; nil when no pod reported.
	Value         *float64 `json:"value"`
	Threshold     float64  `json:"threshold"`
	WindowSeconds int32    `json:"window_seconds"`
	ReadyPods     int      `json:"ready_pods"`
	ReportingPods int      `json:"reporting_pods"`
	Samples       int      `json:"samples"`
	// NewestSampleAgeSeconds is how old the newest sample was at the
	// decision; nil when there was none.
	NewestSampleAgeSeconds *float64 `json:"newest_sample_age_seconds"`
}

// Wake is the stages of a wake from zero, in order. The controller records
// the decision with the first three (RequestHeld from the activator's
// stamp) and adds the pod's two when its pod watch sees them (see
// PodStages); the activator adds the rest when it releases the held
// requests (see Released), and sets RequestHeld to the first held
// request's arrival.
type Wake struct {
	RequestHeld  time.Time `json:"request_held"`
	Decided      time.Time `json:"decided"`
	ScaleWritten time.Time `json:"scale_written"`
	// Pod is the first pod of the target created after the scale was
	// written; PodCreated and PodReady are when the controller's watch saw
	// it created and saw its Ready condition turn true, PodReady no later
	// than EndpointAcked (Envoy gets a ready endpoint only for a ready pod,
	// so a watch that heard later was slow).
	Pod        string    `json:"pod,omitempty"`
	PodCreated time.Time `json:"pod_created,omitzero"`
	PodReady   time.Time `json:"pod_ready,omitzero"`
	// EndpointAcked is when every Envoy of the environment had ACKed a
	// snapshot with a ready endpoint (so a pod was ready).
	EndpointAcked time.Time `json:"endpoint_acked,omitzero"`
	Released      time.Time `json:"released,omitzero"`
	// HeldRequests is how many requests the release let through.
	HeldRequests int `json:"held_requests,omitempty"`
}

// Released is what the activator saw of a wake: when its first request
// arrived, when the route was ready everywhere, when the held requests
// went through, and how many.
type Released struct {
	Namespace, Name string
	FirstHeld       time.Time
	EndpointAcked   time.Time
	Released        time.Time
	Held            int
}

// PodStages is what the controller's pod watch saw of a wake's pod: sent
// once when the pod is created (Ready zero) and again when it is ready.
// Decided names the wake's record (its time).
type PodStages struct {
	Namespace, Name string
	Decided         time.Time
	Pod             string
	Created, Ready  time.Time
}

// Limit set by the controller rather than the rules: the decision was not
// applied because the autoscaler is in dry-run.
const LimitDryRun = "dry_run"
