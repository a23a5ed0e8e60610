// Package command holds the subcommands of the shipped `nemesis` binary
// (serve, migrate, sidecar, version): their flags, each with a NEMESIS_*
// environment twin, and the wiring of the packages they run. cmd/nemesis
// and the development binary cmd/nemesis-dev both compose them.
package command

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

// BuildVersion is set at build time by
// -ldflags "-X github.com/nemesis-ml/nemesis/internal/command.BuildVersion=...".
var BuildVersion = "dev"

// LogFlags are the flags every binary's command line starts with.
type LogFlags struct {
	LogLevel  slog.Level `help:"Log level: debug, info, warn or error." default:"info" env:"NEMESIS_LOG_LEVEL"`
	LogFormat string     `help:"Log format: text or json." enum:"text,json" default:"text" env:"NEMESIS_LOG_FORMAT"`
}

func (f LogFlags) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.LogLevel}
	if f.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Version prints the version.
type Version struct{}

// Run prints the version.
func (Version) Run() error {
	fmt.Println("nemesis", BuildVersion)
	return nil
}

// Main parses the command line into cli (a kong grammar whose log flags are
// logFlags), runs the chosen command until SIGINT or SIGTERM, and exits 1
// when it fails.
func Main(cli any, logFlags *LogFlags, name, description string) {
	kctx := kong.Parse(cli, kong.Name(name), kong.Description(description), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := logFlags.logger()
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(log)
	if err := kctx.Run(); err != nil {
		log.Error("exiting", "command", kctx.Command(), "err", err)
		stop()
		os.Exit(1)
	}
}
