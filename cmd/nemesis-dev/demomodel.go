package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/demomodel"
)

// demoModelCmd is the model `nemesis-dev dev` runs: real inference (a k-NN
// digit classifier trained at start-up), nothing downloaded.
type demoModelCmd struct {
	Listen       string        `help:"Address of POST /predict, GET /ready and GET /healthz." default:"127.0.0.1:8080" env:"NEMESIS_DEMO_LISTEN"`
	StartupDelay time.Duration `help:"Time spent 'loading weights' before the model is trained and ready." default:"0s" env:"NEMESIS_DEMO_STARTUP_DELAY"`
	Samples      int           `help:"Training images; each prediction compares the input with all of them." default:"20000" env:"NEMESIS_DEMO_SAMPLES"`
	Workers      int           `help:"Predictions run at once; the others queue." default:"1" env:"NEMESIS_DEMO_WORKERS"`
	Latency      time.Duration `help:"Time added to each prediction, holding its worker (an accelerator's or I/O wait: time, little CPU)." default:"0s" env:"NEMESIS_DEMO_LATENCY"`
	Seed         uint64        `help:"Seed of the generated training set." default:"1" env:"NEMESIS_DEMO_SEED"`
	BasePath     string        `help:"Serve POST <base-path>/predict, e.g. the path prefix Envoy routes to the model." default:"/" env:"NEMESIS_DEMO_BASE_PATH"`
}

func (c demoModelCmd) Run(ctx context.Context, log *slog.Logger) error {
	return demomodel.Run(ctx, log, c.Listen, demomodel.Config{
		Samples: c.Samples, Seed: c.Seed, StartupDelay: c.StartupDelay, Workers: c.Workers, Latency: c.Latency, BasePath: c.BasePath,
	})
}
