// Package podmetric is the wire format of the samples that sidecars push to
// the controller's POST /metrics: the seed design's Podmetric, plus request
// counters and the source that says which of the metrics a sample carries.
package podmetric

import "time"

// Sources of samples: which metrics a sample carries.
const (
	// SourceAll (no source: the seed's Podmetric) carries every metric as
	// given, a response time of 0 included.
	SourceAll = ""
	// SourceProxy is a sidecar in front of the model: every metric, and a
	// response time only when requests completed.
	SourceProxy = "proxy"
	// SourceMeter is a sidecar out of the request path: CPU, memory and
	// disk only.
	SourceMeter = "meter"
	// SourceEnvoy is serve's reading of Envoy's access logs: request
	// metrics only, a response time only when requests completed. Several
	// serve replicas may each write one for the same pod and second.
	SourceEnvoy = "envoy"
)

// Sample is one pod's measurements over one push interval.
type Sample struct {
	// ID is the pod as namespace/name.
	ID string `json:"id"`
	// Source is one of the Source constants.
	Source string `json:"source,omitempty"`
	// CPUUsage is in millicores.
	CPUUsage float64 `json:"cpuUsage"`
	// MemoryUsage is in MiB.
	MemoryUsage float64 `json:"memoryUsage"`
	// DiskUsage is in MiB, summed over the sidecar's metered paths.
	DiskUsage float64 `json:"diskUsage"`
	// AverageResponseTime is the mean time to last byte, in milliseconds, of
	// the requests completed in the interval; 0 when none completed.
	AverageResponseTime float64 `json:"averageResponseTime"`
	// RequestCount is how many requests completed in the interval.
	RequestCount float64 `json:"requestCount"`
	// RequestRate is RequestCount per second of the interval.
	RequestRate float64 `json:"requestRate"`
	// InFlightRequests is how many requests were open at the end of the
	// interval (SourceEnvoy: their mean number over it).
	InFlightRequests float64 `json:"inFlightRequests"`
	// ErrorCount is how many of the completed requests the pod answered
	// with a 5xx.
	ErrorCount float64 `json:"errorCount,omitempty"`
	// P95ResponseTime is the 95th percentile of the response times, in
	// milliseconds, when requests completed.
	P95ResponseTime float64 `json:"p95ResponseTime,omitempty"`
	// ReceivedAt is when the sample was taken; the controller stamps it when
	// it is missing.
	ReceivedAt time.Time `json:"receivedAt"`
}
