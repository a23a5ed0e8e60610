package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/textmodel"
)

// textModelCmd is the streaming demo model: OpenAI-style completions, one
// token per server-sent event.
type textModelCmd struct {
	Listen       string        `help:"Address of the completions API, GET /ready and GET /healthz." default:"127.0.0.1:8080" env:"NEMESIS_TEXT_LISTEN"`
	Name         string        `help:"The model's name in requests and answers." default:"ngram" env:"NEMESIS_TEXT_NAME"`
	TokenDelay   time.Duration `help:"Time each token takes." default:"20ms" env:"NEMESIS_TEXT_TOKEN_DELAY"`
	StartupDelay time.Duration `help:"Time spent 'loading weights' before the model is trained and ready." default:"0s" env:"NEMESIS_TEXT_STARTUP_DELAY"`
	BasePath     string        `help:"Serve the API under this prefix, e.g. the path prefix Envoy routes to the model." default:"" env:"NEMESIS_TEXT_BASE_PATH"`
}

func (c textModelCmd) Run(ctx context.Context, log *slog.Logger) error {
	return textmodel.Run(ctx, log, c.Listen, textmodel.Config{
		Name: c.Name, TokenDelay: c.TokenDelay, StartupDelay: c.StartupDelay, BasePath: c.BasePath,
	})
}
