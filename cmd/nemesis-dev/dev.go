package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/nemesis-ml/nemesis/internal/command"
	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
)

// devCmd runs the whole stack on this machine, for trying Nemesis out and
// developing it. Real clusters run `serve` and their own databases.
type devCmd struct {
	Dir            string `help:"Folder for the local databases and logs." default:".run" env:"NEMESIS_DEV_DIR"`
	PostgresPort   int    `help:"PostgreSQL port." default:"15432" env:"NEMESIS_DEV_POSTGRES_PORT"`
	RedisPort      int    `help:"Redis port." default:"16379" env:"NEMESIS_DEV_REDIS_PORT"`
	Listen         string `help:"Address of nemesis serve's HTTP APIs." default:"127.0.0.1:8080" env:"NEMESIS_LISTEN"`
	XDSListen      string `help:"Address of the xDS server that Envoy connects to." default:"127.0.0.1:18000" env:"NEMESIS_XDS_LISTEN"`
	EnvoyAdminPort int    `help:"Envoy's admin port." default:"9901" env:"NEMESIS_DEV_ENVOY_ADMIN_PORT"`
	EnvoyPort      int    `help:"Envoy's port for client traffic." default:"10000" env:"NEMESIS_DEV_ENVOY_PORT"`
	Token          string `help:"Operators' bearer token (settings-write and read); generated when empty." env:"NEMESIS_TOKEN"`
	ReadToken      string `help:"Read-only bearer token; generated when empty." env:"NEMESIS_READ_TOKEN"`
	MetricsToken   string `help:"The sidecars' bearer token (metrics-ingest); generated when empty." env:"NEMESIS_METRICS_TOKEN"`
	Environment    string `help:"The environment (Envoy node cluster) of the local Envoy." default:"default" env:"NEMESIS_DEV_ENVIRONMENT"`
	Bootstrap      string `help:"Envoy bootstrap template." default:"envoy/bootstrap.yaml" env:"NEMESIS_ENVOY_BOOTSTRAP"`
	Demo           string `help:"Manifest of the demo run by the local runtime; empty: no demo." default:"manifests/demo/digits.yaml" env:"NEMESIS_DEV_DEMO"`
	PrometheusPort int    `help:"Port of the Prometheus that scrapes the stack; 0: none." default:"9090" env:"NEMESIS_DEV_PROMETHEUS_PORT"`
	AlertRules     string `help:"Rule file Prometheus loads." default:"manifests/monitoring/prometheus/rules.yaml" env:"NEMESIS_DEV_PROMETHEUS_RULES"`
	ProtocolsDemo  string `help:"Manifest of the protocol demos (MLServer over gRPC, a token stream), at zero until asked; empty: none." default:"manifests/demo/protocols.yaml" env:"NEMESIS_DEV_PROTOCOLS_DEMO"`
}

func (c devCmd) Run(ctx context.Context, log *slog.Logger) (err error) {
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", c.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i]())
		}
	}()

	log.Info("starting postgres", "port", c.PostgresPort)
	pg, err := servers.StartPostgres(ctx, servers.PostgresConfig{Dir: filepath.Join(dir, "postgres"), Port: c.PostgresPort})
	if err != nil {
		return err
	}
	stops = append(stops, pg.Stop)
	if err := pg.CreateDatabase(ctx, "nemesis"); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}

	log.Info("starting redis", "port", c.RedisPort)
	rdb, err := servers.StartRedis(ctx, servers.RedisConfig{Dir: filepath.Join(dir, "redis"), Port: c.RedisPort, AppendOnly: true})
	if err != nil {
		return err
	}
	stops = append(stops, rdb.Stop)

	log.Info("starting kube-apiserver and etcd")
	kube, err := servers.StartKube(servers.KubeConfig{Dir: filepath.Join(dir, "kube"), CRDDir: "manifests/crd"})
	if err != nil {
		return err
	}
	stops = append(stops, kube.Stop)
	kubeconfig, err := kube.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}

	token, readToken, metricsToken, err := c.tokens()
	if err != nil {
		return err
	}
	// A new CA and pairs every run: nothing outlives the stack that uses it.
	tlsDir := filepath.Join(dir, "tls")
	certs, err := pki.Generate([]string{c.Environment}, []string{"127.0.0.1", "localhost"}, 30*24*time.Hour)
	if err != nil {
		return err
	}
	if err := certs.WriteDirs(tlsDir); err != nil {
		return err
	}
	serve, err := serveDefaults()
	if err != nil {
		return err
	}
	serve.TLSDir = filepath.Join(tlsDir, pki.ServeDir)
	serve.DatabaseURL = pg.URL("nemesis")
	serve.Kubeconfig = kubeconfigPath
	serve.RedisURL, serve.LeaderElectionNamespace = rdb.URL(), "default"
	serve.Token, serve.ReadToken, serve.MetricsToken = []string{token}, []string{readToken}, []string{metricsToken}
	serve.ProxyLogSpillDir = filepath.Join(dir, "proxy-logs")
	serve.Listen, serve.XDSListen = c.Listen, c.XDSListen
	serve.EnvoyListenerAddress, serve.EnvoyListenerPort = "127.0.0.1", uint32(c.EnvoyPort)
	// Stopped by its turn in stops, after the local runtime, so the
	// sidecars' last samples still reach it.
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- serve.Run(serveCtx, log.With("component", "serve")) }()
	stops = append(stops, func() error { stopServe(); return <-served })

	bootstrap, err := servers.RenderBootstrap(c.Bootstrap, filepath.Join(dir, "envoy"), c.XDSListen, filepath.Join(tlsDir, pki.EnvoyDir(c.Environment)))
	if err != nil {
		return err
	}
	log.Info("starting envoy", "admin_port", c.EnvoyAdminPort)
	envoy, err := servers.StartEnvoy(ctx, servers.EnvoyConfig{
		Bootstrap: bootstrap, Dir: filepath.Join(dir, "envoy"), AdminPort: c.EnvoyAdminPort,
		NodeID: "envoy-local", Cluster: c.Environment,
	})
	if err != nil {
		return err
	}
	stops = append(stops, envoy.Stop)
	if err := envoy.WaitLive(ctx, 30*time.Second); err != nil {
		return err
	}

	// Stopped explicitly and first, while serve and the API server still
	// answer, so the pods drain and their objects go.
	// The pods of an earlier run are gone with its API server: so go their logs.
	if err := os.RemoveAll(filepath.Join(dir, "pods")); err != nil {
		return fmt.Errorf("removing old pod logs: %w", err)
	}
	log.Info("starting the local runtime", "pods", filepath.Join(dir, "pods"))
	stopRuntime, err := startLocalRuntime(context.WithoutCancel(ctx), log.With("component", "local-runtime"), localruntime.Config{
		Kube: kube.Config, Dir: filepath.Join(dir, "pods"), Controller: "http://" + c.Listen, ControllerToken: metricsToken,
		EndpointDelay: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	stops = append(stops, stopRuntime)
	var prom *servers.Prometheus
	if c.PrometheusPort != 0 {
		log.Info("starting prometheus", "port", c.PrometheusPort)
		var stopProm func() error
		if prom, stopProm, err = c.startPrometheus(ctx, log, dir, kube.Config, envoy, readToken); err != nil {
			return err
		}
		stops = append(stops, stopProm)
	}
	if c.Demo != "" {
		if err := applyDemo(ctx, kube.Config, c.Demo, c.Environment); err != nil {
			return err
		}
		if err := demoFiles(dir); err != nil {
			return err
		}
		if c.ProtocolsDemo != "" {
			if err := applyDemo(ctx, kube.Config, c.ProtocolsDemo, c.Environment); err != nil {
				return err
			}
		}
		log.Info("waiting for the demo model to load")
		if err := waitDemoReady(ctx, kube.Config, "demo", "digits", 2*time.Minute); err != nil {
			return err
		}
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(w, "\nNemesis is running. Ctrl-C stops everything.\n\n")
	_, _ = fmt.Fprintf(w, "nemesis serve\thttp://%s (/loadbalancer/settings, /openapi.json, /readyz, /metrics)\n", c.Listen)
	_, _ = fmt.Fprintf(w, "token\t%s (operators: settings-write and read)\n", token)
	_, _ = fmt.Fprintf(w, "read token\t%s (read only: settings, status, proxy logs, /metrics)\n", readToken)
	_, _ = fmt.Fprintf(w, "metrics token\t%s (sidecars: POST /metrics only)\n", metricsToken)
	_, _ = fmt.Fprintf(w, "xds\t%s (mutual TLS; certificates in %s)\n", c.XDSListen, tlsDir)
	_, _ = fmt.Fprintf(w, "envoy\thttp://127.0.0.1:%d (client traffic)\n", c.EnvoyPort)
	_, _ = fmt.Fprintf(w, "envoy admin\t%s (node envoy-local, environment %s)\n", envoy.AdminURL(), c.Environment)
	_, _ = fmt.Fprintf(w, "postgres\t%s\n", pg.URL("nemesis"))
	_, _ = fmt.Fprintf(w, "redis\t%s\n", rdb.URL())
	_, _ = fmt.Fprintf(w, "kubernetes\tKUBECONFIG=%s (API %s)\n", kubeconfigPath, kube.Config.Host)
	_, _ = fmt.Fprintf(w, "logs\t%s (pods: %s)\n", dir, filepath.Join(dir, "pods"))
	if prom != nil {
		_, _ = fmt.Fprintf(w, "prometheus\t%s (scrapes serve, Envoy and the sidecars; rules %s: /alerts)\n", prom.URL(), c.AlertRules)
	}
	predict := fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", c.EnvoyPort)
	if c.Demo != "" {
		_, _ = fmt.Fprintf(w, "demo model\t%s (namespace demo: Deployment, Service and CustomAutoscaler digits)\n", predict)
	}
	_, _ = fmt.Fprintf(w, "\nTry:\n  curl -s -H 'Authorization: Bearer %s' http://%s/loadbalancer/settings\n", readToken, c.Listen)
	_, _ = fmt.Fprintf(w, "  curl -s -X PUT -H 'Authorization: Bearer %s' -d '{\"policy\":\"least_connections\",\"max_connections\":100,\"timeout_seconds\":30}' 'http://%s/loadbalancer/settings?wait=ack'\n", token, c.Listen)
	if c.Demo != "" {
		_, _ = fmt.Fprintf(w, "  curl -s -d @%s %s\n", filepath.Join(c.Dir, "seven.json"), predict)
		_, _ = fmt.Fprintf(w, "  wrk -t2 -c32 -d60s -s %s %s    # load: replicas follow response time\n", filepath.Join(c.Dir, "predict.lua"), predict)
		kubectl := fmt.Sprintf("kubectl --kubeconfig %s -n demo get deploy digits -w", filepath.Join(c.Dir, "kubeconfig"))
		if _, err := exec.LookPath("kubectl"); err != nil {
			kubectl += "    # kubectl is not installed here: install it to watch"
		}
		_, _ = fmt.Fprintf(w, "  %s\n", kubectl)
		_, _ = fmt.Fprintf(w, "  curl -s -H 'Authorization: Bearer %s' http://%s/proxy/logs\n", readToken, c.Listen)
	}
	if c.Demo != "" && c.ProtocolsDemo != "" {
		printProtocolDemos(w, c.EnvoyPort)
	}
	_, _ = fmt.Fprintln(w)
	_ = w.Flush()

	select {
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	case err := <-served:
		served <- err
		return fmt.Errorf("nemesis serve stopped: %w", err)
	}
}

// tokens returns the three tokens, generating those not given.
func (c devCmd) tokens() (token, read, metrics string, err error) {
	out := []string{c.Token, c.ReadToken, c.MetricsToken}
	for i := range out {
		if out[i] == "" {
			if out[i], err = randomToken(); err != nil {
				return "", "", "", err
			}
		}
	}
	return out[0], out[1], out[2], nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// serveDefaults is serve's configuration as its command line gives it with
// no flags, so dev runs serve with every default serve itself has.
func serveDefaults() (command.Serve, error) {
	var c command.Serve
	parser, err := kong.New(&c)
	if err != nil {
		return c, fmt.Errorf("reading serve's flags: %w", err)
	}
	if _, err := parser.Parse(nil); err != nil {
		return c, fmt.Errorf("reading serve's defaults: %w", err)
	}
	return c, nil
}
