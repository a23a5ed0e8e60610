// Command nemesis is the Nemesis control plane for ML inference endpoints
// behind Envoy. Each subcommand parses its flags (every flag has a NEMESIS_*
// environment twin), builds its dependencies and runs.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// version is set at build time by -ldflags "-X main.version=...".
var version = "dev"

type logFlags struct {
	LogLevel  slog.Level `help:"Log level: debug, info, warn or error." default:"info" env:"NEMESIS_LOG_LEVEL"`
	LogFormat string     `help:"Log format: text or json." enum:"text,json" default:"text" env:"NEMESIS_LOG_FORMAT"`
}

func (f logFlags) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.LogLevel}
	if f.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

type cli struct {
	logFlags
	Serve     serveCmd     `cmd:"" help:"Run the control plane: HTTP APIs, health and metrics."`
	Migrate   migrateCmd   `cmd:"" help:"Apply pending database migrations and exit."`
	Dev       devCmd       `cmd:"" help:"Run the whole stack on this machine: PostgreSQL, Redis, kube-apiserver, serve, Envoy, the local runtime and the demo model."`
	Sidecar   sidecarCmd   `cmd:"" help:"Run in a model pod: proxy to the model, meter the pod, push samples to the controller."`
	DemoModel demoModelCmd `cmd:"" name:"demo-model" help:"Serve the demo model: a digit classifier trained at start-up, for nemesis dev."`
	Version   versionCmd   `cmd:"" help:"Print the version."`
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("nemesis", version)
	return nil
}

func main() {
	var c cli
	kctx := kong.Parse(&c,
		kong.Name("nemesis"),
		kong.Description("Control plane for ML inference endpoints behind Envoy."),
		kong.UsageOnError(),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := c.logger()
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(log)
	if err := kctx.Run(); err != nil {
		log.Error("exiting", "command", kctx.Command(), "err", err)
		os.Exit(1)
	}
}
