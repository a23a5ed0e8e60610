package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

// PrometheusConfig says how to run a Prometheus server and what it scrapes.
type PrometheusConfig struct {
	// Dir holds the configuration, the data and the log.
	Dir  string
	Port int
	// Interval is both the scrape and the rule evaluation interval.
	Interval time.Duration
	// Rules are rule files to load.
	Rules []string
	// Targets are scraped as they are.
	Targets []ScrapeTarget
	// SidecarTargets, when set, is a file_sd file of the sidecars to scrape
	// (see SidecarTargets), read again as it changes.
	SidecarTargets string
}

// ScrapeTarget is one endpoint of a job.
type ScrapeTarget struct {
	Job     string
	Address string // host:port
	Path    string // default /metrics
	// BearerToken is sent to every target of the job (serve's /metrics
	// needs the read scope); empty sends none.
	BearerToken string
}

// Prometheus is a running Prometheus server on 127.0.0.1.
type Prometheus struct {
	Config PrometheusConfig
	proc   *Process
}

// StartPrometheus writes the configuration, starts the prometheus that
// `make tools` installed and waits until it is ready.
func StartPrometheus(ctx context.Context, cfg PrometheusConfig) (*Prometheus, error) {
	tools, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	raw, err := yaml.Marshal(prometheusYAML(cfg))
	if err != nil {
		return nil, fmt.Errorf("writing prometheus configuration: %w", err)
	}
	config := filepath.Join(cfg.Dir, "prometheus.yml")
	if err := os.WriteFile(config, raw, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", config, err)
	}
	cmd := exec.Command(filepath.Join(tools, "prometheus"),
		"--config.file", config,
		"--storage.tsdb.path", filepath.Join(cfg.Dir, "data"),
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", cfg.Port),
		"--storage.tsdb.retention.time", "1d",
	)
	proc, err := Start("prometheus", filepath.Join(cfg.Dir, "prometheus.log"), cmd)
	if err != nil {
		return nil, err
	}
	p := &Prometheus{Config: cfg, proc: proc}
	err = waitFor(proc, 30*time.Second, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/-/ready", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("prometheus /-/ready answered %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		_ = proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	return p, nil
}

// prometheusYAML is cfg as a prometheus.yml document.
func prometheusYAML(cfg PrometheusConfig) map[string]any {
	interval := cfg.Interval.String()
	jobs := map[string][]map[string]any{}
	tokens := map[string]string{}
	var order []string
	for _, t := range cfg.Targets {
		if _, ok := jobs[t.Job]; !ok {
			order = append(order, t.Job)
		}
		if t.BearerToken != "" {
			tokens[t.Job] = t.BearerToken
		}
		path := t.Path
		if path == "" {
			path = "/metrics"
		}
		jobs[t.Job] = append(jobs[t.Job], map[string]any{
			"targets": []string{t.Address}, "labels": map[string]string{"__metrics_path__": path},
		})
	}
	var scrapes []map[string]any
	for _, job := range order {
		scrape := map[string]any{"job_name": job, "static_configs": jobs[job]}
		if token := tokens[job]; token != "" {
			scrape["authorization"] = map[string]string{"type": "Bearer", "credentials": token}
		}
		scrapes = append(scrapes, scrape)
	}
	if cfg.SidecarTargets != "" {
		scrapes = append(scrapes, map[string]any{
			"job_name":        "nemesis-sidecars",
			"file_sd_configs": []map[string]any{{"files": []string{cfg.SidecarTargets}, "refresh_interval": interval}},
		})
	}
	return map[string]any{
		"global":         map[string]any{"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
		"rule_files":     cfg.Rules,
		"scrape_configs": scrapes,
	}
}

// URL is the server's base URL.
func (p *Prometheus) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Config.Port) }

// Stop shuts the server down.
func (p *Prometheus) Stop() error { return p.proc.Stop(10 * time.Second) }

// Process is the running server process.
func (p *Prometheus) Process() *Process { return p.proc }

// Query runs an instant query (at the server's now) and returns its result.
func (p *Prometheus) Query(ctx context.Context, query string) (PromResult, error) {
	return p.api(ctx, "/api/v1/query", map[string]string{"query": query})
}

// QueryRange runs a range query over [start, end] at step.
func (p *Prometheus) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) (PromResult, error) {
	return p.api(ctx, "/api/v1/query_range", map[string]string{
		"query": query, "start": start.Format(time.RFC3339Nano), "end": end.Format(time.RFC3339Nano), "step": step.String(),
	})
}

// PromResult is the data of a query's answer: a vector or a matrix, each
// series with its labels.
type PromResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
		Values [][]any           `json:"values"`
	} `json:"result"`
}

func (p *Prometheus) api(ctx context.Context, path string, params map[string]string) (PromResult, error) {
	var out struct {
		Status string     `json:"status"`
		Error  string     `json:"error"`
		Data   PromResult `json:"data"`
	}
	if err := p.Get(ctx, path, params, &out); err != nil {
		return PromResult{}, err
	}
	if out.Status != "success" {
		return PromResult{}, fmt.Errorf("prometheus %s: %s", path, out.Error)
	}
	return out.Data, nil
}

// Get GETs an API path with params and decodes the JSON answer into v,
// whatever its status: Prometheus explains refusals in the body.
func (p *Prometheus) Get(ctx context.Context, path string, params map[string]string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+path, nil)
	if err != nil {
		return err
	}
	q := req.URL.Query()
	for k, val := range params {
		q.Set(k, val)
	}
	req.URL.RawQuery = q.Encode()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("prometheus %s answered %d: %w", path, resp.StatusCode, err)
	}
	return nil
}
