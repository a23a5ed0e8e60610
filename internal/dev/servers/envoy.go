package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// EnvoyConfig says how to start one Envoy.
type EnvoyConfig struct {
	// Bootstrap is the path of the bootstrap file (YAML).
	Bootstrap string
	// Dir holds the log.
	Dir string
	// AdminPort overrides the bootstrap's admin address with 127.0.0.1:AdminPort.
	AdminPort int
	// NodeID and Cluster set Envoy's node; the cluster names the environment.
	NodeID  string
	Cluster string
	// LogLevel defaults to "info".
	LogLevel string
	// Overlay is more bootstrap, as YAML, merged over the file the way
	// the manifests' --config-yaml is (their stats listener).
	Overlay string
	// TLSDir holds the environment's client pair and the control plane's
	// CA (ca.crt, tls.crt, tls.key); empty connects without TLS, to a
	// control plane run with --insecure-no-auth.
	TLSDir string
}

// Envoy is a running Envoy.
type Envoy struct {
	Config EnvoyConfig
	proc   *Process
}

// StartEnvoy starts the Envoy that `make tools` installed and waits until its
// admin interface answers. Envoy on ADS turns LIVE only once the control
// plane has served it: see WaitLive.
func StartEnvoy(ctx context.Context, cfg EnvoyConfig) (*Envoy, error) {
	tools, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	// Envoy takes one --config-yaml: the admin address joins the overlay.
	overlay := map[string]any{}
	if cfg.Overlay != "" {
		if err := yaml.Unmarshal([]byte(cfg.Overlay), &overlay); err != nil {
			return nil, fmt.Errorf("parsing the envoy overlay: %w", err)
		}
	}
	overlay["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": cfg.AdminPort}}}
	overlayJSON, err := json.Marshal(overlay)
	if err != nil {
		return nil, fmt.Errorf("writing the envoy overlay: %w", err)
	}
	args := []string{
		"-c", cfg.Bootstrap,
		// Several Envoys share this machine: no hot-restart shared memory.
		"--disable-hot-restart",
		"--log-level", cfg.LogLevel,
		"--config-yaml", string(overlayJSON),
		// A file access log (serve's --access-log-file) reaches its
		// shipper within a quarter second, as the gRPC one reaches serve.
		"--file-flush-interval-msec", "250",
	}
	if cfg.NodeID != "" {
		args = append(args, "--service-node", cfg.NodeID)
	}
	if cfg.Cluster != "" {
		args = append(args, "--service-cluster", cfg.Cluster)
	}
	cmd := exec.Command(filepath.Join(tools, "envoy"), args...)
	proc, err := Start("envoy", filepath.Join(cfg.Dir, "envoy.log"), cmd)
	if err != nil {
		return nil, err
	}
	e := &Envoy{Config: cfg, proc: proc}
	err = waitFor(proc, 30*time.Second, func() error {
		_, err := e.Admin(ctx, "/ready")
		return err
	})
	if err != nil {
		_ = proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("starting envoy: %w", err)
	}
	return e, nil
}

// WaitLive waits until Envoy's admin /ready answers LIVE: its listeners and
// clusters are initialised.
func (e *Envoy) WaitLive(ctx context.Context, timeout time.Duration) error {
	return waitFor(e.proc, timeout, func() error {
		state, err := e.Admin(ctx, "/ready")
		if err != nil {
			return err
		}
		if strings.TrimSpace(state) != "LIVE" {
			return fmt.Errorf("envoy is %s", strings.TrimSpace(state))
		}
		return nil
	})
}

// AdminURL is the base URL of Envoy's admin interface.
func (e *Envoy) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.Config.AdminPort) }

// Admin GETs an admin path and returns the body.
func (e *Envoy) Admin(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL()+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("envoy admin %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("envoy admin %s: %w", path, err)
	}
	return string(body), nil
}

// Stop shuts Envoy down.
func (e *Envoy) Stop() error { return e.proc.Stop(10 * time.Second) }

// Process is the running Envoy process.
func (e *Envoy) Process() *Process { return e.proc }

// RenderBootstrap writes the bootstrap template (envoy/bootstrap.yaml) into
// dir with the xDS server's address and the TLS folder filled in, and
// returns the file's path. An empty tlsDir removes the control plane
// cluster's TLS.
func RenderBootstrap(template, dir, xdsAddr, tlsDir string) (string, error) {
	host, port, err := net.SplitHostPort(xdsAddr)
	if err != nil {
		return "", fmt.Errorf("parsing xds address %q: %w", xdsAddr, err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", fmt.Errorf("parsing xds port %q: %w", port, err)
	}
	raw, err := os.ReadFile(template)
	if err != nil {
		return "", fmt.Errorf("reading envoy bootstrap: %w", err)
	}
	out := []byte(strings.NewReplacer("XDS_HOST", host, "XDS_PORT", port, "TLS_DIR", tlsDir).Replace(string(raw)))
	if tlsDir == "" {
		if out, err = withoutTLS(out); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return "", fmt.Errorf("writing envoy bootstrap: %w", err)
	}
	return path, nil
}

// withoutTLS removes the transport socket of the bootstrap's static clusters.
func withoutTLS(bootstrap []byte) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(bootstrap, &doc); err != nil {
		return nil, fmt.Errorf("reading envoy bootstrap: %w", err)
	}
	static, _ := doc["static_resources"].(map[string]any)
	clusters, _ := static["clusters"].([]any)
	for _, c := range clusters {
		if cluster, ok := c.(map[string]any); ok {
			delete(cluster, "transport_socket")
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("writing envoy bootstrap: %w", err)
	}
	return out, nil
}

// RouteFilters returns the names of the HTTP filters that the route named
// route configures for itself (typed_per_filter_config), from the dynamic
// route configurations Envoy runs; found is false when no route has that
// name.
func (e *Envoy) RouteFilters(ctx context.Context, route string) (filters []string, found bool, err error) {
	raw, err := e.Admin(ctx, "/config_dump?resource=dynamic_route_configs")
	if err != nil {
		return nil, false, err
	}
	var dump struct {
		Configs []struct {
			RouteConfig struct {
				VirtualHosts []struct {
					Routes []struct {
						Name                 string                     `json:"name"`
						TypedPerFilterConfig map[string]json.RawMessage `json:"typed_per_filter_config"`
					} `json:"routes"`
				} `json:"virtual_hosts"`
			} `json:"route_config"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(raw), &dump); err != nil {
		return nil, false, fmt.Errorf("reading envoy's route configurations: %w", err)
	}
	for _, c := range dump.Configs {
		for _, vh := range c.RouteConfig.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Name == route {
					return slices.Sorted(maps.Keys(r.TypedPerFilterConfig)), true, nil
				}
			}
		}
	}
	return nil, false, nil
}
