package servers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresConfig says where a PostgreSQL server keeps its files and listens.
type PostgresConfig struct {
	// Dir holds the data directory, the socket and the log. It is created
	// and initialised when empty and reused as it is otherwise.
	Dir  string
	Port int
	// Settings are extra `-c name=value` server settings.
	Settings map[string]string
}

// Postgres is a running PostgreSQL server on 127.0.0.1.
type Postgres struct {
	Config PostgresConfig
	proc   *Process
}

// StartPostgres initialises cfg.Dir if needed and starts a server on it. As
// root, the server runs as the `postgres` user, since PostgreSQL refuses root.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	pg := &Postgres{Config: cfg}
	if err := pg.Start(ctx); err != nil {
		return nil, err
	}
	return pg, nil
}

// Start starts the server again after Stop, on the same data and port.
func (p *Postgres) Start(ctx context.Context) error {
	cfg := p.Config
	bin, err := postgresBinDir()
	if err != nil {
		return err
	}
	cred, err := postgresCredential()
	if err != nil {
		return err
	}
	dataDir := filepath.Join(cfg.Dir, "data")
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); os.IsNotExist(err) {
		if err := initdb(bin, cfg.Dir, dataDir, cred); err != nil {
			return err
		}
	}
	socketDir := filepath.Join(cfg.Dir, "socket")
	if err := makeOwnedDir(socketDir, cred); err != nil {
		return err
	}
	args := []string{
		"-D", dataDir, "-p", itoa(cfg.Port), "-k", socketDir,
		"-c", "listen_addresses=127.0.0.1",
	}
	keys := make([]string, 0, len(cfg.Settings))
	for k := range cfg.Settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+cfg.Settings[k])
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := Start("postgres", filepath.Join(cfg.Dir, "postgres.log"), cmd)
	if err != nil {
		return err
	}
	// SIGTERM is PostgreSQL's "smart" shutdown, which waits for every
	// client to leave; SIGINT ("fast") disconnects them.
	proc.StopSignal = syscall.SIGINT
	p.proc = proc
	err = waitFor(proc, 30*time.Second, func() error {
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		_ = proc.Stop(5 * time.Second)
		return fmt.Errorf("starting postgres: %w", err)
	}
	return nil
}

// URL is the connection string of a database on this server.
func (p *Postgres) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Config.Port, database)
}

// Stop shuts the server down ("fast" mode: active sessions are disconnected).
func (p *Postgres) Stop() error { return p.proc.Stop(30 * time.Second) }

// Process is the running server process.
func (p *Postgres) Process() *Process { return p.proc }

// CreateDatabase creates a database owned by the `postgres` role.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to create database %q: %w", name, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %q: %w", name, err)
	}
	return nil
}

func initdb(bin, dir, dataDir string, cred *syscall.Credential) error {
	if err := makeOwnedDir(dir, cred); err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"),
		"-D", dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb in %s: %w\n%s", dataDir, err, out)
	}
	return nil
}

// postgresBinDir finds the server binaries of Debian's newest installed
// PostgreSQL, which are not on PATH.
func postgresBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		if path, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(path), nil
		}
		return "", fmt.Errorf("no PostgreSQL server found: run `make tools`")
	}
	slices.SortFunc(matches, func(a, b string) int {
		return majorOf(a) - majorOf(b)
	})
	return filepath.Dir(matches[len(matches)-1]), nil
}

func majorOf(path string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return n
}

// postgresCredential is nil (run as ourselves) unless we are root.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running postgres as root needs the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func makeOwnedDir(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if cred == nil {
		return nil
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to postgres: %w", dir, err)
	}
	return nil
}
