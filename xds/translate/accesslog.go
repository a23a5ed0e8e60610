package translate

import (
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	grpcaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nemesis-ml/nemesis/internal/accesslogfile"
)

// AccessLogName is the log_name Envoy sends with its entries.
const AccessLogName = "nemesis"

// AccessLogFlushInterval is the longest Envoy keeps an access-log entry
// before sending it.
const AccessLogFlushInterval = 250 * time.Millisecond

// AccessLogBufferBytes is how much Envoy buffers before sending.
const AccessLogBufferBytes = 256 << 10

// buildAccessLog streams every request of the listener to the access-log
// service behind cluster. Envoy buffers entries and sends them when 256 KiB
// are buffered (at high rates, every few milliseconds) or every 250 ms, off
// the request path: serve times pods from these entries, and a quarter of a
// second is what Envoy adds to the autoscaler's reaction at low rates (one
// second with Envoy's default).
func buildAccessLog(opts Options) (*accesslogv3.AccessLog, error) {
	if opts.AccessLogPath != "" {
		return buildFileAccessLog(opts.AccessLogPath)
	}
	cfg, err := anypb.New(&grpcaccesslogv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcaccesslogv3.CommonGrpcAccessLogConfig{
			LogName: AccessLogName,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: opts.AccessLogCluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
			BufferSizeBytes:     wrapperspb.UInt32(AccessLogBufferBytes),
			BufferFlushInterval: durationpb.New(AccessLogFlushInterval),
		},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.http_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}

// buildFileAccessLog writes every request of the listener to path as an
// accesslogfile record. Envoy's file logger formats on the worker and
// writes from a thread of its own (flushed as Envoy's
// --file-flush-interval-msec says).
func buildFileAccessLog(path string) (*accesslogv3.AccessLog, error) {
	cfg, err := anypb.New(&fileaccesslogv3.FileAccessLog{
		Path: path,
		AccessLogFormat: &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: accesslogfile.Format},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}
