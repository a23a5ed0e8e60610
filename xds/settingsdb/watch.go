package settingsdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Watch LISTENs for settings changes until ctx ends. It calls changed with
// the environment of every notification, and with "" after every
// (re)connect, meaning "re-read them all": notifications sent while the
// connection was down are lost, the rows are not. When changed fails, Watch
// reconnects and so re-reads everything.
func Watch(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, changed func(environment string) error) {
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := listen(ctx, pool, changed)
		if ctx.Err() != nil {
			return
		}
		log.Warn("settings listener failed, reconnecting", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// listen holds one connection in LISTEN until it fails.
func listen(ctx context.Context, pool *pgxpool.Pool, changed func(string) error) error {
	connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(connectCtx, pool.Config().ConnConfig)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to listen: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	listenCtx, cancel := context.WithTimeout(ctx, queryTimeout)
	_, err = conn.Exec(listenCtx, "LISTEN "+Channel)
	cancel()
	if err != nil {
		return fmt.Errorf("listening on %s: %w", Channel, err)
	}
	if err := changed(""); err != nil {
		return err
	}
	for {
		// Waking up now and then to ping notices a server that went away
		// without closing the connection.
		waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			if err := changed(n.Payload); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("pinging listener connection: %w", err)
			}
		default:
			return fmt.Errorf("waiting for notifications: %w", err)
		}
	}
}
