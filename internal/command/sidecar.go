package command

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/nemesis-ml/nemesis/sidecar"
	"github.com/nemesis-ml/nemesis/sidecar/meter"
)

// Sidecar runs in every model pod, beside the model container (in front of
// it in proxy mode).
type Sidecar struct {
	Mode            string        `help:"meter: meter the pod only, out of the request path (the Service targets the model's port; serve times requests from Envoy's access logs). proxy: also proxy and time every request on --listen, for traffic that does not come through Envoy." enum:"meter,proxy" default:"meter" env:"NEMESIS_SIDECAR_MODE"`
	Listen          string        `help:"Pod port that the Service targets, with --mode proxy; requests are forwarded to the model." default:":8012" env:"NEMESIS_SIDECAR_LISTEN"`
	AdminListen     string        `help:"Address of /ready, /healthz and Prometheus /metrics." default:":9091" env:"NEMESIS_SIDECAR_ADMIN_LISTEN"`
	ModelURL        string        `help:"The model server on localhost." default:"http://127.0.0.1:8080" env:"NEMESIS_MODEL_URL"`
	ModelProtocol   string        `help:"How to speak to the model: auto (as the client spoke: h2c for HTTP/2 clients such as gRPC), http1 or h2c." enum:"auto,http1,h2c" default:"auto" env:"NEMESIS_MODEL_PROTOCOL"`
	ModelHealthPath string        `help:"Model path probed for /ready (2xx or 3xx is ready); empty: ready when the model port accepts connections." env:"NEMESIS_MODEL_HEALTH_PATH"`
	PodNamespace    string        `help:"The pod's namespace (downward API metadata.namespace)." default:"default" env:"NEMESIS_POD_NAMESPACE"`
	PodName         string        `help:"The pod's name (downward API metadata.name); defaults to the host name, which is the pod name in Kubernetes." env:"NEMESIS_POD_NAME"`
	ControllerURL   string        `help:"Base URL of the controller that takes samples at POST /metrics; empty: samples are only exported on /metrics." env:"NEMESIS_CONTROLLER_URL"`
	ControllerToken string        `help:"Bearer token for POST /metrics." env:"NEMESIS_CONTROLLER_TOKEN"`
	PushInterval    time.Duration `help:"How often a sample is taken and pushed." default:"1s" env:"NEMESIS_PUSH_INTERVAL"`
	PushBatch       int           `help:"Most samples in one POST." default:"100" env:"NEMESIS_PUSH_BATCH"`
	PushBuffer      int           `help:"Most samples held while the controller is unreachable; the oldest go first." default:"600" env:"NEMESIS_PUSH_BUFFER"`
	Meter           string        `help:"Where CPU and memory come from: auto (the pod cgroup if visible, else every process of a shared process namespace), cgroup, processes or off." enum:"auto,cgroup,processes,off" default:"auto" env:"NEMESIS_METER"`
	MeterCgroup     string        `help:"Cgroup to meter, as /proc/PID/cgroup names it (e.g. /kubepods/burstable/pod<uid>); empty: the pod cgroup found from the sidecar's own." env:"NEMESIS_METER_CGROUP"`
	MeterPID        int           `help:"Meter this process and its descendants from /proc; 0 with --meter=processes: every process in /proc." env:"NEMESIS_METER_PID"`
	DiskPaths       []string      `help:"Folders whose disk usage is reported (model cache, emptyDir), comma-separated." env:"NEMESIS_DISK_PATHS"`
	DiskInterval    time.Duration `help:"How often the disk paths are measured." default:"10s" env:"NEMESIS_DISK_INTERVAL"`
	ShutdownGrace   time.Duration `help:"How long in-flight requests may take to finish after SIGTERM." default:"30s" env:"NEMESIS_SHUTDOWN_GRACE"`
}

func (c Sidecar) Run(ctx context.Context, log *slog.Logger) error {
	model, err := url.Parse(c.ModelURL)
	if err != nil {
		return fmt.Errorf("parsing --model-url: %w", err)
	}
	pod := c.PodName
	if pod == "" {
		if pod, err = os.Hostname(); err != nil {
			return fmt.Errorf("naming the pod: %w", err)
		}
	}
	return sidecar.Run(ctx, log, sidecar.Config{
		Mode:            c.Mode,
		Listen:          c.Listen,
		AdminListen:     c.AdminListen,
		Model:           model,
		ModelProtocol:   c.ModelProtocol,
		ModelHealthPath: c.ModelHealthPath,
		Namespace:       c.PodNamespace,
		Pod:             pod,
		Controller:      c.ControllerURL,
		Token:           c.ControllerToken,
		PushInterval:    c.PushInterval,
		BatchSize:       c.PushBatch,
		BufferSize:      c.PushBuffer,
		Meter: meter.Config{
			Source:       c.Meter,
			Cgroup:       c.MeterCgroup,
			PID:          c.MeterPID,
			DiskPaths:    c.DiskPaths,
			DiskInterval: c.DiskInterval,
		},
		ShutdownGrace: c.ShutdownGrace,
	})
}
