package command

import (
	"time"

	"k8s.io/client-go/rest"

	"github.com/nemesis-ml/nemesis/controller"
	"github.com/nemesis-ml/nemesis/controller/activation"
)

type autoscalingFlags struct {
	RedisURL                string        `help:"Redis holding pod samples and mirrored rules." default:"redis://127.0.0.1:6379/0" env:"NEMESIS_REDIS_URL"`
	MetricsRetention        time.Duration `help:"How long pod samples are kept; at least the longest rule window." default:"1h" env:"NEMESIS_METRICS_RETENTION"`
	Controller              bool          `help:"Run the CustomAutoscaler controller (--no-controller serves POST /metrics without a Kubernetes API)." default:"true" negatable:"" env:"NEMESIS_CONTROLLER"`
	LeaderElectionNamespace string        `help:"Namespace of the controller's leader-election Lease; empty means the pod's own." env:"NEMESIS_LEADER_ELECTION_NAMESPACE"`
}

func (f autoscalingFlags) config(kube *rest.Config, activations *activation.Local) controller.Config {
	return controller.Config{
		RedisURL: f.RedisURL, Retention: f.MetricsRetention, RunController: f.Controller,
		Kube: kube, LeaderElectionNamespace: f.LeaderElectionNamespace, Activations: activations,
	}
}
