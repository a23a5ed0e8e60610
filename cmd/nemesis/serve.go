package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nemesis-ml/nemesis/controller"
	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/httpserver"
)

const defaultShutdownGrace = 20 * time.Second

type serveCmd struct {
	databaseFlags
	autoscalingFlags
	Listen        string        `help:"Address of the HTTP APIs, health and metrics." default:"127.0.0.1:8080" env:"NEMESIS_LISTEN"`
	ShutdownGrace time.Duration `help:"How long requests in flight may take to finish on SIGTERM." default:"20s" env:"NEMESIS_SHUTDOWN_GRACE"`
}

func (c serveCmd) Run(ctx context.Context, log *slog.Logger) error {
	pool, err := connectAndMigrate(ctx, log, c.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := httpserver.NewRegistry()
	autoscaling, err := controller.New(c.autoscalingFlags.config(), reg, log)
	if err != nil {
		return err
	}
	mux := httpserver.Mux(reg, httpserver.Check{Name: "postgres", Run: pool.Ping}, autoscaling.Check())
	mux.Handle("POST /metrics", autoscaling.Ingest)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return autoscaling.Run(ctx) })
	g.Go(func() error { return httpserver.Serve(ctx, log, c.Listen, mux, c.ShutdownGrace) })
	return g.Wait()
}

// connectAndMigrate retries until PostgreSQL answers and the schema is
// current, so the control plane can start before its database does.
func connectAndMigrate(ctx context.Context, log *slog.Logger, url string) (*pgxpool.Pool, error) {
	var pool *pgxpool.Pool
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Cap: 5 * time.Second, Steps: math.MaxInt32}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		p, err := database.Open(ctx, url)
		if err == nil {
			if err = database.Migrate(ctx, p, log); err == nil {
				pool = p
				return true, nil
			}
			p.Close()
		}
		log.Warn("database not ready, retrying", "err", err)
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for database: %w", err)
	}
	return pool, nil
}
