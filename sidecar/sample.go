package sidecar

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
	"github.com/nemesis-ml/nemesis/sidecar/proxy"
)

// sampler turns the proxy's request window and the meter's reading into one
// Sample per interval; without a proxy (metering mode), the reading alone.
type sampler struct {
	id    string
	proxy *proxy.Proxy // nil in metering mode
	meter *meter.Meter
	add   func(podmetric.Sample)
	log   *slog.Logger

	last        time.Time
	failing     bool
	diskFailing bool

	cpu, memory, disk prometheus.Gauge
	meterErrors       *prometheus.CounterVec
}

// Kinds of meter errors.
const (
	meterErrorSource = "cpu_memory" // no sample that interval
	meterErrorDisk   = "disk"       // a path left out of diskUsage
)

func newSampler(id string, px *proxy.Proxy, m *meter.Meter, add func(podmetric.Sample), log *slog.Logger, reg prometheus.Registerer) *sampler {
	s := &sampler{
		id: id, proxy: px, meter: m, add: add, log: log, last: time.Now(),
		cpu: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nemesis_sidecar_pod_cpu_millicores",
			Help: "CPU the pod used over the last interval, in millicores.",
		}),
		memory: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nemesis_sidecar_pod_memory_mib",
			Help: "Memory the pod uses, in MiB.",
		}),
		disk: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nemesis_sidecar_pod_disk_mib",
			Help: "Disk space used under the metered paths, in MiB.",
		}),
		meterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nemesis_sidecar_meter_errors_total",
			Help: "Metering failures by kind: cpu_memory (the interval had no sample), disk (a path or folder left out of diskUsage).",
		}, []string{"kind"}),
	}
	s.meterErrors.WithLabelValues(meterErrorSource)
	s.meterErrors.WithLabelValues(meterErrorDisk)
	reg.MustRegister(s.cpu, s.memory, s.disk, s.meterErrors)
	return s
}

// run takes a sample every interval until ctx ends, then a last one for the
// part of the interval that had passed.
func (s *sampler) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.take(time.Now())
			return
		case now := <-t.C:
			s.take(now)
		}
	}
}

func (s *sampler) take(now time.Time) {
	r, err := s.meter.Read()
	if err != nil {
		// No sample beats a sample of zeros that could scale the model
		// down; the requests roll into the next interval's sample.
		s.meterErrors.WithLabelValues(meterErrorSource).Inc()
		if !s.failing {
			s.log.Warn("metering the pod failed, skipping samples until it works", "pod", s.id, "err", err)
			s.failing = true
		}
		return
	}
	if s.failing {
		s.log.Info("metering the pod works again", "pod", s.id)
		s.failing = false
	}
	s.noteDisk(r.DiskSkipped)
	elapsed := now.Sub(s.last)
	s.last = now
	sample := podmetric.Sample{
		ID:          s.id,
		Source:      podmetric.SourceMeter,
		CPUUsage:    r.CPUMillicores,
		MemoryUsage: r.MemoryMiB,
		DiskUsage:   r.DiskMiB,
		ReceivedAt:  now.UTC(),
	}
	if s.proxy != nil {
		w := s.proxy.Take()
		sample.Source = podmetric.SourceProxy
		sample.RequestCount = float64(w.Requests)
		sample.InFlightRequests = float64(w.InFlight)
		if w.Requests > 0 {
			sample.AverageResponseTime = float64(w.ResponseTime) / float64(w.Requests) / float64(time.Millisecond)
		}
		if elapsed > 0 {
			sample.RequestRate = float64(w.Requests) / elapsed.Seconds()
		}
	}
	s.cpu.Set(r.CPUMillicores)
	s.memory.Set(r.MemoryMiB)
	s.disk.Set(r.DiskMiB)
	s.add(sample)
}

// noteDisk counts the disk paths a reading left out and logs the first
// time, naming one; the sample is sent all the same.
func (s *sampler) noteDisk(skipped []error) {
	if len(skipped) == 0 {
		return
	}
	s.meterErrors.WithLabelValues(meterErrorDisk).Add(float64(len(skipped)))
	if !s.diskFailing {
		s.log.Warn("disk usage leaves out what it cannot read; samples are still sent",
			"pod", s.id, "skipped", len(skipped), "first", skipped[0])
		s.diskFailing = true
	}
}
