package servers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig says where a Redis server keeps its files and listens.
type RedisConfig struct {
	Dir  string
	Port int
	// AppendOnly keeps data across restarts (the local runtime wants it;
	// tests mostly do not).
	AppendOnly bool
}

// Redis is a running Redis server on 127.0.0.1.
type Redis struct {
	Config RedisConfig
	proc   *Process
}

// StartRedis starts redis-server and waits until it answers PING.
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	r := &Redis{Config: cfg}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Start starts the server again after Stop, on the same folder and port.
func (r *Redis) Start(ctx context.Context) error {
	cfg := r.Config
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("no redis-server found: run `make tools`: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	appendOnly := "no"
	if cfg.AppendOnly {
		appendOnly = "yes"
	}
	cmd := exec.Command(path,
		"--bind", "127.0.0.1", "--port", itoa(cfg.Port), "--dir", cfg.Dir,
		"--save", "", "--appendonly", appendOnly, "--daemonize", "no", "--protected-mode", "yes")
	proc, err := Start("redis", filepath.Join(cfg.Dir, "redis.log"), cmd)
	if err != nil {
		return err
	}
	r.proc = proc
	client := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	defer func() { _ = client.Close() }()
	err = waitFor(proc, 15*time.Second, func() error { return client.Ping(ctx).Err() })
	if err != nil {
		_ = proc.Stop(5 * time.Second)
		return fmt.Errorf("starting redis: %w", err)
	}
	return nil
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Config.Port) }

// URL is the redis:// URL of the server's database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Stop shuts the server down.
func (r *Redis) Stop() error { return r.proc.Stop(10 * time.Second) }

// Process is the running server process.
func (r *Redis) Process() *Process { return r.proc }
