package command

import (
	"context"
	"log/slog"

	"github.com/nemesis-ml/nemesis/internal/database"
)

type databaseFlags struct {
	DatabaseURL string `help:"PostgreSQL connection URL." default:"postgres://postgres@127.0.0.1:5432/nemesis?sslmode=disable" env:"NEMESIS_DATABASE_URL"`
}

// Migrate applies pending database migrations and exits.
type Migrate struct {
	databaseFlags
}

func (c Migrate) Run(ctx context.Context, log *slog.Logger) error {
	pool, err := database.Open(ctx, c.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return database.Migrate(ctx, pool, log)
}
