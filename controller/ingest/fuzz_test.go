package ingest

import (
	"math"
	"testing"
	"time"
)

// FuzzDecode: any body either decodes to samples within their documented
// ranges, or is refused with an error naming what is wrong.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"id":"default/resnet-0","cpuUsage":800,"memoryUsage":512,"diskUsage":10,"averageResponseTime":40,"requestCount":20,"requestRate":2,"inFlightRequests":1}`,
		`[{"id":"default/a","cpuUsage":1.7e308},{"id":"default/a","cpuUsage":1.6e308}]`,
		`{"id":"default/a","cpuUsage":1,"cpuUsage":2}`, `{"id":"default/a","CPUUsage":1}`, `[{"id":"default/a"}]garbage`,
		`{"id":"default/a","receivedAt":"2026-01-01T00:00:00Z"}`, `[]`, ``,
	} {
		f.Add([]byte(seed))
	}
	h := New(nil, Options{})
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	f.Fuzz(func(t *testing.T, raw []byte) {
		samples, err := h.decode(raw)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused without saying why")
			}
			return
		}
		for _, s := range samples {
			for _, v := range []struct{ value, max float64 }{
				{s.CPUUsage, MaxCPUMillicores}, {s.MemoryUsage, MaxMemoryMiB}, {s.DiskUsage, MaxDiskMiB},
				{s.AverageResponseTime, MaxResponseTimeMS}, {s.RequestCount, MaxRequestCount},
				{s.RequestRate, MaxRequestRate}, {s.InFlightRequests, MaxInFlightRequests},
			} {
				if math.IsNaN(v.value) || v.value < 0 || v.value > v.max {
					t.Fatalf("accepted %+v", s)
				}
			}
			if s.ReceivedAt.IsZero() || s.ReceivedAt.After(now.Add(DefaultSkew)) {
				t.Fatalf("accepted receivedAt %s", s.ReceivedAt)
			}
		}
	})
}
