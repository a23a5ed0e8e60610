package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are the ADS server's series, by environment. The gauges are read
// from the connected streams at each scrape.
type metrics struct {
	snapshots, acks, nacks *prometheus.CounterVec
}

func newMetrics() *metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"environment"})
	}
	return &metrics{
		snapshots: counter("nemesis_xds_snapshots_total", "Configurations published to an environment's Envoys."),
		acks:      counter("nemesis_xds_acks_total", "Responses Envoys accepted (one per resource type and version)."),
		nacks:     counter("nemesis_xds_nacks_total", "Responses Envoys rejected."),
	}
}

var (
	connectedDesc = prometheus.NewDesc("nemesis_xds_connected_envoys",
		"Envoys connected to this server over ADS.", []string{"environment"}, nil)
	notAckedDesc = prometheus.NewDesc("nemesis_xds_envoys_not_acked",
		"Connected Envoys that have not ACKed the environment's current configuration for every resource type.", []string{"environment"}, nil)
	nackedDesc = prometheus.NewDesc("nemesis_xds_envoys_nacked",
		"Connected Envoys that rejected the environment's current configuration.", []string{"environment"}, nil)
)

// Collector returns the server's metrics for a Prometheus registry.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.metrics.snapshots.Describe(ch)
	c.s.metrics.acks.Describe(ch)
	c.s.metrics.nacks.Describe(ch)
	ch <- connectedDesc
	ch <- notAckedDesc
	ch <- nackedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.metrics.snapshots.Collect(ch)
	c.s.metrics.acks.Collect(ch)
	c.s.metrics.nacks.Collect(ch)
	type counts struct{ connected, notAcked, nacked int }
	by := map[string]*counts{}
	c.s.mu.Lock()
	// Every environment with a configuration has its gauges, at 0 when no
	// Envoy is connected: an alert can then tell "none" from "unknown".
	for env := range c.s.versions {
		by[env] = &counts{}
	}
	for _, st := range c.s.streams {
		if st.node == "" {
			continue
		}
		n := by[st.environment]
		if n == nil {
			n = &counts{}
			by[st.environment] = n
		}
		n.connected++
		current := c.s.versions[st.environment]
		if st.status().AckedVersion != current {
			n.notAcked++
		}
		if st.lastNack != nil && st.lastNack.Version == current {
			n.nacked++
		}
	}
	c.s.mu.Unlock()
	for env, n := range by {
		ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, float64(n.connected), env)
		ch <- prometheus.MustNewConstMetric(notAckedDesc, prometheus.GaugeValue, float64(n.notAcked), env)
		ch <- prometheus.MustNewConstMetric(nackedDesc, prometheus.GaugeValue, float64(n.nacked), env)
	}
}
