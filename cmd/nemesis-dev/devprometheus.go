package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
)

// startPrometheus runs Prometheus for `nemesis dev`: it scrapes serve, Envoy
// (its admin's /stats/prometheus) and the sidecars of the local runtime's
// pods, with the alert and recording rules loaded. The returned stop ends
// both.
func (c devCmd) startPrometheus(ctx context.Context, log *slog.Logger, dir string, kube *rest.Config, envoy *servers.Envoy, readToken string) (*servers.Prometheus, func() error, error) {
	rules, err := filepath.Abs(c.AlertRules)
	if err != nil {
		return nil, nil, fmt.Errorf("resolving %s: %w", c.AlertRules, err)
	}
	dir = filepath.Join(dir, "prometheus")
	targets := filepath.Join(dir, "sidecars.json")
	prom, err := servers.StartPrometheus(ctx, servers.PrometheusConfig{
		Dir: dir, Port: c.PrometheusPort, Interval: 5 * time.Second, Rules: []string{rules}, SidecarTargets: targets,
		Targets: []servers.ScrapeTarget{
			{Job: "nemesis", Address: c.Listen, BearerToken: readToken},
			{Job: "envoy", Address: strings.TrimPrefix(envoy.AdminURL(), "http://"), Path: "/stats/prometheus"},
		},
	})
	if err != nil {
		return nil, nil, err
	}
	syncCtx, stopSync := context.WithCancel(context.WithoutCancel(ctx))
	synced := make(chan error, 1)
	go func() {
		err := servers.SidecarTargets(syncCtx, kube, targets, 2*time.Second)
		if err != nil {
			log.Error("listing the sidecars for prometheus", "err", err)
		}
		synced <- err
	}()
	return prom, func() error {
		stopSync()
		<-synced
		return prom.Stop()
	}, nil
}
