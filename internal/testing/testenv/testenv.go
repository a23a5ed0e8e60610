// Package testenv hands tests real PostgreSQL, Redis, Envoy and Kubernetes
// API servers on loopback ports of their own, stops them when the test ends,
// and prints their logs into the test output when it failed.
//
// PostgreSQL, Redis and Envoy are started per test, so a test may stop and
// restart them to inject faults. The Kubernetes API server takes seconds to
// start and is shared by the tests of one package: call Run from TestMain.
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nemesis-ml/nemesis/internal/database"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/kubescheme"
	"github.com/nemesis-ml/nemesis/internal/pki"
)

const logTail = 16 << 10

// Run runs the package's tests, stops the shared API server and exits.
func Run(m *testing.M) {
	os.Exit(run(m))
}

// RunWithNemesis is Run for packages whose tests start the nemesis binary:
// it builds the development binary (cmd/nemesis-dev: every shipped command
// plus dev and demo-model) first and sets *bin to its path.
func RunWithNemesis(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "nemesis-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "nemesis")
	build := exec.Command("go", "build", "-o", *bin, "github.com/nemesis-ml/nemesis/cmd/nemesis-dev")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building nemesis:", err)
	} else {
		code = run(m)
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func run(m *testing.M) int {
	// controller-runtime complains on stderr when nobody set its logger.
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	kube.mu.Lock()
	defer kube.mu.Unlock()
	if kube.server != nil {
		if err := kube.server.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		_ = os.RemoveAll(kube.dir)
	}
	if pgTemplate.base != "" {
		_ = os.RemoveAll(pgTemplate.base)
	}
	return code
}

// Port returns a free port on 127.0.0.1.
func Port(t testing.TB) int {
	t.Helper()
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Dir returns a folder that other users (the postgres user) can enter, removed
// when the test ends. t.TempDir's folders are private to root.
func Dir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nemesis-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Context returns a context that ends with the test or after timeout.
func Context(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// dumpOnFailure prints the log of whichever process proc returns at the
// end, so a server the test restarted is covered too.
func dumpOnFailure(t testing.TB, proc func() *servers.Process) {
	t.Cleanup(func() {
		if p := proc(); t.Failed() && p != nil {
			t.Logf("--- %s log (%s) ---\n%s", p.Name, p.LogPath, p.Log(logTail))
		}
	})
}

// Postgres starts a PostgreSQL server for this test, with its data directory
// copied from one initialised once per test binary.
func Postgres(t testing.TB) *servers.Postgres {
	t.Helper()
	dir := Dir(t, "pg")
	if err := copyTemplate(filepath.Join(dir, "pg")); err != nil {
		t.Fatal(err)
	}
	pg, err := servers.StartPostgres(t.Context(), servers.PostgresConfig{
		Dir:  filepath.Join(dir, "pg"),
		Port: Port(t),
		// Durability is not what tests check; speed is welcome.
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	dumpOnFailure(t, pg.Process)
	return pg
}

// Database starts a PostgreSQL server for this test and returns the URL of a
// database on it with Nemesis's migrations applied.
func Database(t testing.TB) (*servers.Postgres, string) {
	t.Helper()
	pg := Postgres(t)
	ctx := Context(t, time.Minute)
	if err := pg.CreateDatabase(ctx, "nemesis"); err != nil {
		t.Fatal(err)
	}
	url := pg.URL("nemesis")
	pool, err := database.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := database.Migrate(ctx, pool, discardLogger()); err != nil {
		t.Fatal(err)
	}
	return pg, url
}

var pgTemplate struct {
	once sync.Once
	base string // removed by Run when the package's tests end
	dir  string
	err  error
}

// copyTemplate gives dst a freshly initialised PostgreSQL directory; initdb
// runs once per test binary and later servers copy its result.
func copyTemplate(dst string) error {
	pgTemplate.once.Do(func() {
		base, err := os.MkdirTemp("", "nemesis-pgtemplate-")
		if err != nil {
			pgTemplate.err = err
			return
		}
		pgTemplate.base = base
		_ = os.Chmod(base, 0o755)
		pgTemplate.dir = filepath.Join(base, "pg")
		port, err := servers.FreePort()
		if err != nil {
			pgTemplate.err = err
			return
		}
		// Starting it once proves the template works before anyone copies it.
		pg, err := servers.StartPostgres(context.Background(), servers.PostgresConfig{Dir: pgTemplate.dir, Port: port})
		if err != nil {
			pgTemplate.err = err
			return
		}
		pgTemplate.err = pg.Stop()
	})
	if pgTemplate.err != nil {
		return fmt.Errorf("preparing postgres template: %w", pgTemplate.err)
	}
	return copyTree(pgTemplate.dir, dst)
}

// Redis starts a Redis server for this test.
func Redis(t testing.TB) *servers.Redis {
	t.Helper()
	r, err := servers.StartRedis(t.Context(), servers.RedisConfig{Dir: Dir(t, "redis"), Port: Port(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	dumpOnFailure(t, r.Process)
	return r
}

// RedisClient returns a client of r, closed when the test ends.
func RedisClient(t testing.TB, r *servers.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Envoy starts Envoy on a bootstrap file, with its admin on a free port. It
// returns once the admin answers; call WaitLive for a configured Envoy.
func Envoy(t testing.TB, cfg servers.EnvoyConfig) *servers.Envoy {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = Dir(t, "envoy")
	}
	if cfg.AdminPort == 0 {
		cfg.AdminPort = Port(t)
	}
	e, err := servers.StartEnvoy(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	dumpOnFailure(t, e.Process)
	return e
}

// ProjectEnvoy starts an Envoy on the repository's bootstrap
// (envoy/bootstrap.yaml), connected to the xDS server at xdsAddr, with
// cfg's node id, cluster, log level and client certificates (cfg.TLSDir,
// see Certificates; none for a server without TLS), and waits until it is
// LIVE.
func ProjectEnvoy(t testing.TB, xdsAddr string, cfg servers.EnvoyConfig) *servers.Envoy {
	t.Helper()
	cfg.Dir = Dir(t, "envoy")
	bootstrap, err := servers.RenderBootstrap(filepath.Join(RepoRoot(t), "envoy", "bootstrap.yaml"), cfg.Dir, xdsAddr, cfg.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bootstrap = bootstrap
	e := Envoy(t, cfg)
	if err := e.WaitLive(t.Context(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return e
}

// Certs is a folder of certificates written as `nemesis certgen --out-dir`
// does (serve's pair under pki.ServeDir, an environment's client pair under
// pki.EnvoyDir(env)), and the CA that signed them, which can sign more.
type Certs struct {
	Dir string
	ca  *pki.CA
}

// Certificates writes a CA, serve's serving pair (for 127.0.0.1) and a client
// pair for each environment into a folder of the test's: serve's --tls-dir
// is pki.ServeDir under it, an Envoy's TLSDir pki.EnvoyDir(env).
func Certificates(t testing.TB, environments ...string) *Certs {
	t.Helper()
	ca, err := pki.NewCA("nemesis test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &Certs{Dir: Dir(t, "tls"), ca: ca}
	serve, err := ca.Server([]string{"127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.WriteDir(filepath.Join(c.Dir, pki.ServeDir)); err != nil {
		t.Fatal(err)
	}
	for _, env := range environments {
		c.Client(t, env)
	}
	return c
}

// Client writes a client pair of environment, signed by the CA, and returns
// its folder.
func (c *Certs) Client(t testing.TB, environment string) string {
	t.Helper()
	pair, err := c.ca.Client(environment, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(c.Dir, pki.EnvoyDir(environment))
	if err := pair.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

var kube struct {
	mu     sync.Mutex
	server *servers.Kube
	dir    string
	err    error
}

// Kube returns the package's Kubernetes API server with the project's CRDs
// from manifests/ installed, starting it on first use. Its objects outlive
// the test: use a namespace of the test's own.
func Kube(t testing.TB) *rest.Config {
	t.Helper()
	kube.mu.Lock()
	defer kube.mu.Unlock()
	if kube.server == nil && kube.err == nil {
		kube.dir, kube.err = os.MkdirTemp("", "nemesis-kube-")
		if kube.err == nil {
			kube.server, kube.err = servers.StartKube(servers.KubeConfig{Dir: kube.dir, CRDDir: CRDDir(t)})
		}
	}
	if kube.err != nil {
		t.Fatal(kube.err)
	}
	server := kube.server
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- kube-apiserver and etcd logs ---\n%s", server.Logs(logTail))
		}
	})
	return rest.CopyConfig(server.Config)
}

// CRDDir is manifests/crd of this repository.
func CRDDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "manifests", "crd")
}

// RepoRoot is the folder of the project's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "cmd", "nemesis")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no repository root above the working directory")
		}
		dir = parent
	}
}

// copyTree copies a directory keeping owners and modes, which PostgreSQL
// checks on its data directory.
func copyTree(src, dst string) error {
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %w: %s", src, err, out)
	}
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Exec runs a statement on the database at url.
func Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	ctx := Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRow scans the one row of a query on the database at url into dest.
func QueryRow(t testing.TB, url, sql string, dest ...any) {
	t.Helper()
	ctx := Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// KubeConfigFile writes a kubeconfig of the package's API server for
// processes the test starts, and returns its path.
func KubeConfigFile(t testing.TB) string {
	t.Helper()
	return KubeConfigFileAs(t, "")
}

// KubeConfigFileAs is KubeConfigFile for a client that impersonates user
// (e.g. system:serviceaccount:ns:name), so RBAC applies to it as to that
// user; empty user means the API server's administrator.
func KubeConfigFileAs(t testing.TB, user string) string {
	t.Helper()
	Kube(t)
	kube.mu.Lock()
	raw, err := kube.server.KubeConfig()
	kube.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		cfg, err := clientcmd.Load(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, auth := range cfg.AuthInfos {
			auth.Impersonate = user
		}
		if raw, err = clientcmd.Write(*cfg); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Process starts cmd with its output in a log file of the test's, stops it
// when the test ends and prints its log when the test failed.
func Process(t testing.TB, name string, cmd *exec.Cmd) *servers.Process {
	t.Helper()
	p, err := servers.Start(name, filepath.Join(Dir(t, name), name+".log"), cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(10 * time.Second) })
	dumpOnFailure(t, func() *servers.Process { return p })
	return p
}

// KubeClient is a client of the package's API server that knows the
// built-in types and the CustomAutoscaler.
func KubeClient(t testing.TB) client.Client {
	t.Helper()
	scheme, err := kubescheme.New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(Kube(t), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Eventually calls check until it returns nil, failing the test with
// check's last error, and what, after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
