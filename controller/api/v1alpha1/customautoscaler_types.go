package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Action is what a rule does when all its thresholds hold.
// +kubebuilder:validation:Enum=INCREASE_INSTANCES;DECREASE_INSTANCES;DECREASE_INSTANCES_TO_ZERO
type Action string

const (
	ActionIncreaseInstances       Action = "INCREASE_INSTANCES"
	ActionDecreaseInstances       Action = "DECREASE_INSTANCES"
	ActionDecreaseInstancesToZero Action = "DECREASE_INSTANCES_TO_ZERO"
)

// Activation: the activator asks the controller to wake a target by
// stamping this annotation on its CustomAutoscaler with the current time
// (RFC 3339, nanoseconds). The stamp is a lease: the activator renews it
// every ActivationRenewInterval while it holds requests of the target, and
// the controller counts requests as held, and the target as busy, until
// ActivationLease after the latest stamp. Any serve replica may stamp it;
// the elected controller acts on it.
const (
	AnnotationActivation    = "autoscaler-group.autoscaler/activation-requested-at"
	ActivationRenewInterval = 5 * time.Second
	ActivationLease         = 3 * ActivationRenewInterval
	// ActivationRule is the rule of a decision that woke a target.
	ActivationRule = "activation"
)

// MetricType names a per-pod metric that the sidecar reports.
// +kubebuilder:validation:Enum=CPU_USAGE;MEMORY_USAGE;DISK_USAGE;AVERAGE_RESPONSE_TIME;REQUEST_RATE;IN_FLIGHT_REQUESTS
type MetricType string

const (
	// MetricCPUUsage is in millicores.
	MetricCPUUsage MetricType = "CPU_USAGE"
	// MetricMemoryUsage is in MiB.
	MetricMemoryUsage MetricType = "MEMORY_USAGE"
	// MetricDiskUsage is in MiB.
	MetricDiskUsage MetricType = "DISK_USAGE"
	// MetricAverageResponseTime is in milliseconds.
	MetricAverageResponseTime MetricType = "AVERAGE_RESPONSE_TIME"
	// MetricRequestRate is in requests per second.
	MetricRequestRate MetricType = "REQUEST_RATE"
	// MetricInFlightRequests is a count.
	MetricInFlightRequests MetricType = "IN_FLIGHT_REQUESTS"
)

// Operator compares an aggregated metric with a threshold's value.
// +kubebuilder:validation:Enum=GREATER_THAN;LESS_THAN;EQUAL_TO
type Operator string

const (
	OperatorGreaterThan Operator = "GREATER_THAN"
	OperatorLessThan    Operator = "LESS_THAN"
	OperatorEqualTo     Operator = "EQUAL_TO"
)

// ScaleTargetReference names the scalable resource, in the autoscaler's
// namespace, whose scale subresource the controller sets.
type ScaleTargetReference struct {
	// APIVersion of the target, e.g. apps/v1.
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// Kind of the target, e.g. Deployment or StatefulSet.
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Name of the target.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Route publishes the target through Envoy.
type Route struct {
	// Environment is the Envoy fleet (Envoy's node cluster) that serves the route.
	// +kubebuilder:default=default
	// +kubebuilder:validation:Pattern=`^[a-z0-9-]{1,50}$`
	// +optional
	Environment string `json:"environment,omitempty"`
	// PathPrefix selects the requests of this model.
	// +kubebuilder:validation:Pattern=`^/[^\s?#]*$`
	// +kubebuilder:validation:MaxLength=256
	PathPrefix string `json:"pathPrefix"`
	// Service is the Service, in the autoscaler's namespace, whose ready
	// endpoints receive the traffic.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// Port is the Service port to send traffic to.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// Hosts are the host names the route answers for (the Host header, or
	// gRPC's :authority), without a port; empty answers every host. A host
	// name is matched before any path.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=set
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// Headers must all be present with exactly these values, e.g. a model
	// name header that tells apart gRPC models sharing one path.
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	// +optional
	Headers []HeaderMatch `json:"headers,omitempty"`
	// Protocol is how Envoy speaks to the pods: http1, or h2c (HTTP/2
	// without TLS, which gRPC needs). Unset: h2c when the Service port's
	// appProtocol is kubernetes.io/h2c or grpc, http1 otherwise.
	// +kubebuilder:validation:Enum=http1;h2c
	// +optional
	Protocol string `json:"protocol,omitempty"`
}

// HeaderMatch is a request header that must have exactly Value.
// +kubebuilder:validation:XValidation:rule="self.name != 'host'",message="match the host with hosts, not a header"
type HeaderMatch struct {
	// Name of the header, in lower case; not a pseudo-header.
	// +kubebuilder:validation:Pattern=`^[a-z0-9][-a-z0-9_.]*$`
	// +kubebuilder:validation:MaxLength=100
	Name string `json:"name"`
	// Value the header must have, exactly.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[ -~]+$`
	Value string `json:"value"`
}

// Threshold compares one aggregated metric with a value.
type Threshold struct {
	MetricType MetricType `json:"metricType"`
	Operator   Operator   `json:"operator"`
	// Value in the metric's unit: millicores, MiB, milliseconds, requests per
	// second or requests.
	// +kubebuilder:validation:Minimum=0
	Value float64 `json:"value"`
}

// ScalingRule fires its action when all of its thresholds hold.
type ScalingRule struct {
	// ID names the rule; unique within the autoscaler.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	ID     string `json:"id"`
	Action Action `json:"action"`
	// Thresholds that must all hold.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	Thresholds []Threshold `json:"thresholds"`
	// WindowSeconds is how far back the samples are aggregated.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	WindowSeconds int32 `json:"windowSeconds,omitempty"`
}

// ScalingPolicy limits scaling in one direction.
type ScalingPolicy struct {
	// StabilizationWindowSeconds: a change in this direction is made only
	// when every decision over this window asked for it, and then by the
	// smallest step any of them asked for. Defaults: 0 for scaleUp, 300 for
	// scaleDown.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	StabilizationWindowSeconds *int32 `json:"stabilizationWindowSeconds,omitempty"`
	// MaxStep is how many replicas one decision adds or removes. Default 1.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxStep *int32 `json:"maxStep,omitempty"`
}

// Behavior shapes how fast the autoscaler moves, per direction.
type Behavior struct {
	// +optional
	ScaleUp *ScalingPolicy `json:"scaleUp,omitempty"`
	// +optional
	ScaleDown *ScalingPolicy `json:"scaleDown,omitempty"`
}

// ScaleToZero configures scaling to and from zero replicas.
type ScaleToZero struct {
	// IdlePeriodSeconds is how long a DECREASE_INSTANCES_TO_ZERO rule's
	// thresholds must hold, with fresh samples, before the target goes to zero.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=0
	// +optional
	IdlePeriodSeconds int32 `json:"idlePeriodSeconds,omitempty"`
	// HoldTimeoutSeconds is how long a request to a target at zero is held
	// while it wakes up, before it fails with 503.
	// +kubebuilder:default=120
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	HoldTimeoutSeconds int32 `json:"holdTimeoutSeconds,omitempty"`
}

// CustomAutoscalerSpec is what the operator asks for.
// +kubebuilder:validation:XValidation:rule="self.maxReplicas >= self.minReplicas",message="maxReplicas must be greater than or equal to minReplicas"
// +kubebuilder:validation:XValidation:rule="!self.rules.exists(r, r.action == 'DECREASE_INSTANCES_TO_ZERO') || self.minReplicas == 0",message="minReplicas must be 0 when a rule scales to zero"
type CustomAutoscalerSpec struct {
	ScaleTargetRef ScaleTargetReference `json:"scaleTargetRef"`
	// MinReplicas is the floor of DECREASE_INSTANCES (which never goes below
	// one). Zero is reached only through a DECREASE_INSTANCES_TO_ZERO rule.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +optional
	MinReplicas int32 `json:"minReplicas"`
	// MaxReplicas is the ceiling of INCREASE_INSTANCES.
	// +kubebuilder:validation:Minimum=1
	MaxReplicas int32 `json:"maxReplicas"`
	// Route publishes the target through Envoy; without it the target is
	// scaled but not routed.
	// +optional
	Route *Route `json:"route,omitempty"`
	// Rules decide the scaling; an increase beats a decrease.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=id
	Rules []ScalingRule `json:"rules"`
	// +optional
	Behavior *Behavior `json:"behavior,omitempty"`
	// +optional
	ScaleToZero *ScaleToZero `json:"scaleToZero,omitempty"`
	// DryRun records decisions without scaling the target.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// Decision is one evaluation of the rules that chose a replica count.
type Decision struct {
	Time metav1.Time `json:"time"`
	// Rule is the id of the rule that fired, or a word such as "activation".
	// +optional
	Rule   string `json:"rule,omitempty"`
	Action string `json:"action"`
	// Values are the aggregated metrics the rules saw, by metric type.
	// +optional
	Values       map[string]float64 `json:"values,omitempty"`
	FromReplicas int32              `json:"fromReplicas"`
	ToReplicas   int32              `json:"toReplicas"`
	Reason       string             `json:"reason"`
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
	// TargetResourceVersion is the target's scale resourceVersion the
	// decision was made on: a controller that finds it unchanged knows the
	// decision was never applied and applies it.
	// +optional
	TargetResourceVersion string `json:"targetResourceVersion,omitempty"`
}

// Recommendation is the replica count the rules asked for from Time on.
type Recommendation struct {
	Time     metav1.MicroTime `json:"time"`
	Replicas int32            `json:"replicas"`
}

// CustomAutoscalerStatus is what the controller observed and did.
type CustomAutoscalerStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the target's current replica count.
	// +optional
	Replicas int32 `json:"replicas"`
	// DesiredReplicas is the count the last decision asked for.
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas"`
	// LastScaleTime is when the controller last changed the target's
	// replicas; only samples taken after it count towards the next change.
	// +optional
	LastScaleTime *metav1.MicroTime `json:"lastScaleTime,omitempty"`
	// +optional
	LastDecision *Decision `json:"lastDecision,omitempty"`
	// Selector is the label selector of the target's pods, from its scale
	// subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// IdleSince is when a DECREASE_INSTANCES_TO_ZERO rule started to hold,
	// with fresh samples from every ready pod, without a break.
	// +optional
	IdleSince *metav1.MicroTime `json:"idleSince,omitempty"`
	// Recommendations are the replica counts the rules asked for recently,
	// each from its time on, kept here so that the stabilization windows
	// survive a controller restart.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Recommendations []Recommendation `json:"recommendations,omitempty"`
	// Conditions: Ready, ScalingActive, AbleToScale, MetricsAvailable,
	// RouteAccepted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CustomAutoscaler scales a workload from the metrics its pods' sidecars
// report, with operator-written rules, down to zero.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cas,categories=nemesis
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.scaleTargetRef.name`
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.minReplicas`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxReplicas`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredReplicas`
// +kubebuilder:printcolumn:name="Last-Rule",type=string,JSONPath=`.status.lastDecision.rule`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Route-Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="RouteAccepted")].status`
// +kubebuilder:printcolumn:name="Route-Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="RouteAccepted")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CustomAutoscaler struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CustomAutoscalerSpec   `json:"spec"`
	Status CustomAutoscalerStatus `json:"status,omitempty"`
}

// CustomAutoscalerList is a list of CustomAutoscalers.
// +kubebuilder:object:root=true
type CustomAutoscalerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CustomAutoscaler `json:"items"`
}
