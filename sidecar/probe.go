package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// modelProbe tells whether the model is ready: its health path answers
// 2xx or 3xx, as a kubelet HTTP probe counts it, or, with no health path,
// its port accepts connections.
type modelProbe struct {
	addr   string // host:port
	url    string // "" for a TCP check
	client *http.Client
}

func newModelProbe(addr, healthURL string) *modelProbe {
	return &modelProbe{addr: addr, url: healthURL, client: &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		// A redirect is an answer; following it would probe something else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// check runs one probe; ctx bounds it.
func (p *modelProbe) check(ctx context.Context) error {
	if p.url == "" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return fmt.Errorf("model port: %w", err)
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("model health check: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("model health check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("model health check %s answered %d", p.url, resp.StatusCode)
	}
	return nil
}

// errDraining makes /ready fail once SIGTERM arrived, so that Kubernetes
// takes the pod out of its EndpointSlices while in-flight requests finish.
var errDraining = errors.New("shutting down")
