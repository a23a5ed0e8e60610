// Package podtraffic_test measures what timing pods from the access logs
// costs serve: the access-log service's work per entry (decoding Envoy's
// messages into proxy_logs rows) with and without the per-pod side (the pod's request,
// its aggregation, a flush a second), in the same run, as a ratio.
//
//	make bench   # or: go test -run '^$' -bench . -benchtime 1x ./bench/podtraffic
package podtraffic_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/extproc/accesslog"
	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
	"github.com/nemesis-ml/nemesis/xds/ir"
)

const (
	entries = 1_000_000
	pods    = 20
	batch   = 100 // entries per message, as Envoy's buffer sends them
)

func BenchmarkPodTraffic(b *testing.B) {
	routes := map[string][]ir.Route{"prod": {{Name: "ml/digits"}}}
	log := make([]*accesslogdatav3.HTTPAccessLogEntry, entries)
	for i := range pods {
		routes["prod"][0].Endpoints = append(routes["prod"][0].Endpoints, ir.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080, Pod: fmt.Sprintf("ml/digits-%d", i)})
	}
	now := time.Now()
	for i := range log {
		log[i] = &accesslogdatav3.HTTPAccessLogEntry{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				StartTime: timestamppb.New(now), RouteName: "ml/digits",
				UpstreamRemoteAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.0.0.%d", i%pods+1), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
				TimeToFirstUpstreamTxByte: durationpb.New(time.Millisecond),
				TimeToFirstUpstreamRxByte: durationpb.New(time.Duration(10+i%20) * time.Millisecond),
				TimeToLastUpstreamRxByte:  durationpb.New(time.Duration(11+i%20) * time.Millisecond),
				Duration:                  durationpb.New(time.Duration(12+i%20) * time.Millisecond),
			},
			Request:  &accesslogdatav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_POST, Path: "/models/digits/predict"},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
		}
	}
	// The messages as Envoy sends them.
	var msgs [][]byte
	for i := 0; i < entries; i += batch {
		raw, err := proto.Marshal(&accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: log[i : i+batch]},
		}})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, raw)
	}
	rows := func(traffic *podtraffic.Aggregator) time.Duration {
		start := time.Now()
		dec := accesslog.NewDecoder()
		out := make([]logsink.Row, batch)
		reqs := make([]podtraffic.Request, batch)
		flushed := 0
		for n, msg := range msgs {
			_, es, err := dec.Message(msg)
			if err != nil || len(es) != batch {
				b.Fatalf("%d entries: %v", len(es), err)
			}
			for j := range es {
				out[j] = accesslog.Row("prod", &es[j])
				if traffic != nil {
					reqs[j] = accesslog.PodRequest(out[j].Route, &es[j])
				}
			}
			i := n * batch
			if traffic != nil {
				traffic.Observe("prod", reqs)
				// A flush a second at 50,000 entries a second.
				if i/50_000 > flushed {
					flushed = i / 50_000
					traffic.Flush(time.Now(), time.Second)
				}
			}
		}
		return time.Since(start)
	}
	// Interleaved rounds, medians: the machine is shared and noisy.
	const rounds = 5
	for range b.N {
		var withouts, withs []time.Duration
		rows(nil) // warm up
		for range rounds {
			traffic := podtraffic.New(nil)
			traffic.SetRoutes(routes)
			withouts = append(withouts, rows(nil))
			withs = append(withs, rows(traffic))
		}
		without, with := median(withouts), median(withs)
		ratio := float64(with) / float64(without)
		b.ReportMetric(ratio, "cost-ratio")
		b.ReportMetric(0, "ns/op")
		b.Logf("%d entries, %d pods, median of %d rounds: rows alone %v (%.0f ns/entry), rows and pod traffic %v (%.0f ns/entry): %.3f× the work, +%.0f ns/entry",
			entries, pods, rounds, without.Round(time.Millisecond), float64(without)/entries, with.Round(time.Millisecond), float64(with)/entries, ratio, float64(with-without)/entries)
	}
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
