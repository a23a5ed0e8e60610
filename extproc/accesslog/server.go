package accesslog

import (
	"errors"
	"io"
	"log/slog"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

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
	accesslogv3.UnimplementedAccessLogServiceServer
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
	accesslogv3.RegisterAccessLogServiceServer(g, s)
}

// StreamAccessLogs reads one Envoy's stream. Envoy names itself in the
// first message only; the rows' environment is the one of its client
// certificate, and a stream naming another is refused before anything it
// sent is stored. TCP entries are ignored (Nemesis proxies HTTP).
func (s *Server) StreamAccessLogs(stream accesslogv3.AccessLogService_StreamAccessLogsServer) error {
	ctx := stream.Context()
	environment, err := identity.Authorize(ctx, "access logs", "")
	if err != nil {
		s.log.Warn("access logs refused", "peer", identity.Describe(ctx), "err", err)
		return err
	}
	closeTraffic := func() {}
	defer func() { closeTraffic() }()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier(); id != nil {
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
		entries := msg.GetHttpLogs().GetLogEntry()
		if len(entries) == 0 {
			continue
		}
		rows := make([]logsink.Row, len(entries))
		var traffic []podtraffic.Request
		if s.opts.Traffic != nil {
			traffic = make([]podtraffic.Request, len(entries))
		}
		now := s.now().UTC()
		for i, e := range entries {
			rows[i] = Row(environment, e)
			if traffic != nil {
				traffic[i] = PodRequest(rows[i].Route, e)
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
		if traffic != nil {
			s.opts.Traffic.Observe(environment, traffic)
		}
	}
}
