package accesslog

import (
	"errors"
	"io"
	"log/slog"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
	"github.com/nemesis-ml/nemesis/extproc/podtraffic"
	"github.com/nemesis-ml/nemesis/internal/identity"
)

// Sink takes the rows of received entries; it must not block for long.
type Sink interface {
	Add(rows ...logsink.Row)
}

// MaxAhead is how far past the server's clock an entry's start time may
// be; later ones are clamped to the time they arrived (and counted), so a
// made-up future row cannot sit on top of GET /proxy/logs and escape
// retention.
const MaxAhead = time.Minute

// Options say what the service keeps of each entry.
type Options struct {
	// DropQuery logs URLs without their query string, which may carry
	// what clients consider secret (keys, user ids).
	DropQuery bool
	// Registerer receives the service's metrics; none when nil.
	Registerer prometheus.Registerer
	// Traffic, when set, receives what each entry says of the pod that
	// served it.
	Traffic Traffic
}

// Traffic takes the per-pod side of the entries, per stream.
type Traffic interface {
	// Open notes a stream from an Envoy of environment until closed.
	Open(environment string) (closed func())
	Observe(environment string, reqs []podtraffic.Request)
}

// Server is the access-log service Envoy streams entries to.
type Server struct {
	sink    Sink
	log     *slog.Logger
	opts    Options
	now     func() time.Time
	clamped prometheus.Counter
}

// New returns a service handing rows to sink.
func New(sink Sink, log *slog.Logger, opts Options) *Server {
	s := &Server{sink: sink, log: log, opts: opts, now: time.Now,
		clamped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nemesis_proxy_log_future_timestamps_total",
			Help: "Access-log entries that started more than a minute in the future, stored with the time they arrived instead.",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.clamped)
	}
	return s
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	g.RegisterService(&serviceDesc, s)
}

// serviceDesc is envoy.service.accesslog.v3.AccessLogService with its
// messages left undecoded: the stream receives each as an empty message,
// for which protobuf keeps every field as raw bytes, and a Decoder reads
// the few fields rows use from those.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: accesslogv3.AccessLogService_ServiceDesc.ServiceName,
	HandlerType: (*rawStreamer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "StreamAccessLogs",
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(rawStreamer).streamAccessLogs(stream) },
		ClientStreams: true,
	}},
	Metadata: accesslogv3.AccessLogService_ServiceDesc.Metadata,
}

type rawStreamer interface {
	streamAccessLogs(grpc.ServerStream) error
}

// streamAccessLogs reads one Envoy's stream. Envoy names itself in the
// first message only; the rows' environment is the one of its client
// certificate, and a stream naming another is refused before anything it
// sent is stored. TCP entries are ignored (Nemesis proxies HTTP).
func (s *Server) streamAccessLogs(stream grpc.ServerStream) error {
	ctx := stream.Context()
	environment, err := identity.Authorize(ctx, "access logs", "")
	if err != nil {
		s.log.Warn("access logs refused", "peer", identity.Describe(ctx), "err", err)
		return err
	}
	closeTraffic := func() {}
	defer func() { closeTraffic() }()
	dec := NewDecoder()
	var (
		raw     emptypb.Empty
		rows    []logsink.Row
		traffic []podtraffic.Request
	)
	for {
		err := stream.RecvMsg(&raw)
		if errors.Is(err, io.EOF) {
			return stream.SendMsg(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		id, entries, err := dec.Message(raw.ProtoReflect().GetUnknown())
		if err != nil {
			s.log.Warn("access logs refused", "peer", identity.Describe(ctx), "err", err)
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if id != nil {
			env, err := identity.Authorize(ctx, "access logs", Environment(id.GetNode()))
			if err != nil {
				s.log.Warn("access logs refused", "node", id.GetNode().GetId(), "peer", identity.Describe(ctx), "err", err)
				return err
			}
			environment = env
			s.log.Debug("envoy streams access logs", "node", id.GetNode().GetId(), "environment", environment)
			if s.opts.Traffic != nil {
				closeTraffic()
				closeTraffic = s.opts.Traffic.Open(environment)
			}
		}
		if len(entries) == 0 {
			continue
		}
		// A sink may keep the slice it is given: a new one each message.
		rows = make([]logsink.Row, len(entries))
		traffic = traffic[:0]
		now := s.now().UTC()
		for i := range entries {
			rows[i] = Row(environment, &entries[i])
			if s.opts.Traffic != nil {
				traffic = append(traffic, PodRequest(rows[i].Route, &entries[i]))
			}
			if rows[i].Timestamp.After(now.Add(MaxAhead)) {
				rows[i].Timestamp = now
				s.clamped.Inc()
			}
			if s.opts.DropQuery {
				rows[i].TargetURL = WithoutQuery(rows[i].TargetURL)
			}
		}
		s.sink.Add(rows...)
		if s.opts.Traffic != nil {
			s.opts.Traffic.Observe(environment, traffic)
		}
	}
}
