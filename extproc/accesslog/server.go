package accesslog

import (
	"errors"
	"io"
	"log/slog"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"

	"github.com/nemesis-ml/nemesis/extproc/logsink"
)

// Sink takes the rows of received entries; it must not block for long.
type Sink interface {
	Add(rows ...logsink.Row)
}

// Options say what the service keeps of each entry.
type Options struct {
	// DropQuery logs URLs without their query string, which may carry
	// what clients consider secret (keys, user ids).
	DropQuery bool
}

// Server is the access-log service Envoy streams entries to.
type Server struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	sink Sink
	log  *slog.Logger
	opts Options
}

// New returns a service handing rows to sink.
func New(sink Sink, log *slog.Logger, opts Options) *Server {
	return &Server{sink: sink, log: log, opts: opts}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	accesslogv3.RegisterAccessLogServiceServer(g, s)
}

// StreamAccessLogs reads one Envoy's stream. Envoy names itself in the
// first message only; TCP entries are ignored (Nemesis proxies HTTP).
func (s *Server) StreamAccessLogs(stream accesslogv3.AccessLogService_StreamAccessLogsServer) error {
	environment := ""
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier(); id != nil {
			environment = Environment(id.GetNode())
			s.log.Debug("envoy streams access logs", "node", id.GetNode().GetId(), "environment", environment)
		}
		entries := msg.GetHttpLogs().GetLogEntry()
		if len(entries) == 0 {
			continue
		}
		rows := make([]logsink.Row, len(entries))
		for i, e := range entries {
			rows[i] = Row(environment, e)
			if s.opts.DropQuery {
				rows[i].TargetURL = WithoutQuery(rows[i].TargetURL)
			}
		}
		s.sink.Add(rows...)
	}
}
