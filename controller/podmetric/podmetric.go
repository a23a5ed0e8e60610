// Package podmetric is the wire format of the samples that sidecars push to
// the controller's POST /metrics: the seed design's Podmetric, plus request
// counters.
package podmetric

import "time"

// Sample is one pod's measurements over one push interval.
type Sample struct {
	// ID is the pod as namespace/name.
	ID string `json:"id"`
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
	// InFlightRequests is how many requests were open at the end of the interval.
	InFlightRequests float64 `json:"inFlightRequests"`
	// ReceivedAt is when the sample was taken; the controller stamps it when
	// it is missing.
	ReceivedAt time.Time `json:"receivedAt"`
}
