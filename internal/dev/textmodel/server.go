// Package textmodel is the streaming demo model: a word bigram model trained
// at start-up on a text the project ships (corpus.txt), served in OpenAI's
// completions format with one token per server-sent event and a delay
// between tokens, as vLLM and TGI stream them. Beside it, a WebSocket echo
// and an upload endpoint that counts and hashes a body, for the protocol
// tests (docs/protocols.md).
package textmodel

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nemesis-ml/nemesis/internal/dev/modelserver"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
)

//go:embed corpus.txt
var corpus string

// Config is how the model loads and serves.
type Config struct {
	// Name is the model's name in requests and answers.
	Name string
	// TokenDelay is the time each token takes, as a real model's decoding
	// step does.
	TokenDelay time.Duration
	// StartupDelay is waited before training ("loading weights").
	StartupDelay time.Duration
	// BasePath prefixes every path but /ready and /healthz.
	BasePath string
}

// MaxTokens bounds a completion.
const MaxTokens = 512

// Server serves the model.
type Server struct {
	cfg   Config
	log   *slog.Logger
	model atomic.Pointer[Bigram]
	ids   atomic.Int64
}

// New returns a server whose model is not loaded yet: call Load.
func New(cfg Config, log *slog.Logger) *Server {
	cfg.BasePath = strings.TrimSuffix(cfg.BasePath, "/")
	return &Server{cfg: cfg, log: log}
}

// Load waits the start-up delay, then trains the model; from then on the
// server is ready.
func (s *Server) Load(ctx context.Context) error {
	if err := modelserver.StartupDelay(ctx, s.cfg.StartupDelay); err != nil {
		return err
	}
	m := Train(corpus)
	s.model.Store(m)
	s.log.Info("model loaded", "vocabulary", m.Vocabulary())
	return nil
}

// Handler serves POST <base>/v1/completions, GET <base>/v1/models,
// <base>/v1/echo (WebSocket), POST <base>/v1/uploads, GET /ready and
// GET /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	modelserver.Probes(mux, func() bool { return s.model.Load() != nil })
	base := s.cfg.BasePath
	mux.HandleFunc("POST "+base+"/v1/completions", s.completions)
	mux.HandleFunc("GET "+base+"/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{
			{"id": s.cfg.Name, "object": "model", "owned_by": "nemesis"},
		}})
	})
	// No Handshake: the echo takes any Origin (its clients are programs).
	mux.Handle("GET "+base+"/v1/echo", websocket.Server{Handler: echo})
	mux.HandleFunc("POST "+base+"/v1/uploads", s.upload)
	return mux
}

type completionRequest struct {
	Model     string `json:"model"`
	Prompt    string `json:"prompt"`
	MaxTokens *int   `json:"max_tokens"`
	Stream    bool   `json:"stream"`
}

type choice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type completion struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []choice       `json:"choices"`
	Usage   map[string]int `json:"usage,omitempty"`
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	m := s.model.Load()
	if m == nil {
		httpjson.WriteError(w, http.StatusServiceUnavailable, "", "the model is loading")
		return
	}
	var req completionRequest
	// OpenAI's clients send fields this model ignores (temperature, ...).
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "", "body: "+err.Error())
		return
	}
	n := 16
	if req.MaxTokens != nil {
		n = *req.MaxTokens
	}
	switch {
	case req.Model != s.cfg.Name:
		httpjson.WriteError(w, http.StatusNotFound, "model", fmt.Sprintf("model: no model %q here (this is %q)", req.Model, s.cfg.Name))
		return
	case n < 1 || n > MaxTokens:
		httpjson.WriteError(w, http.StatusBadRequest, "max_tokens", fmt.Sprintf("max_tokens: must be between 1 and %d", MaxTokens))
		return
	}
	tokens := m.Generate(req.Prompt, n)
	out := completion{
		ID: fmt.Sprintf("cmpl-%d", s.ids.Add(1)), Object: "text_completion",
		Created: time.Now().Unix(), Model: s.cfg.Name,
	}
	length := "length"
	if !req.Stream {
		for range tokens {
			if !sleep(r.Context(), s.cfg.TokenDelay) {
				return
			}
		}
		out.Choices = []choice{{Text: strings.Join(tokens, ""), FinishReason: &length}}
		out.Usage = map[string]int{"prompt_tokens": len(strings.Fields(req.Prompt)), "completion_tokens": n, "total_tokens": len(strings.Fields(req.Prompt)) + n}
		httpjson.Write(w, http.StatusOK, out)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for i, tok := range tokens {
		if !sleep(r.Context(), s.cfg.TokenDelay) {
			return
		}
		out.Choices = []choice{{Text: tok}}
		if i == len(tokens)-1 {
			out.Choices[0].FinishReason = &length
		}
		if !event(w, rc, out) {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// event writes one server-sent event and flushes it at once: a token must
// leave when it is made.
func event(w io.Writer, rc *http.ResponseController, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// upload reads the body as it comes, without holding it, and answers its
// size and SHA-256.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "", "body: "+err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
}

// Run serves the model on addr until ctx ends, loading it in the background.
func Run(ctx context.Context, log *slog.Logger, addr string, cfg Config) error {
	s := New(cfg, log)
	return modelserver.Run(ctx, log, addr, s.Load, s.Handler())
}

// message is one WebSocket message with its type (text or binary).
type message struct {
	data []byte
	typ  byte
}

// echoCodec reads and writes messages keeping their type.
var echoCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m := v.(message)
		return m.data, m.typ, nil
	},
	Unmarshal: func(data []byte, typ byte, v any) error {
		*(v.(*message)) = message{data: data, typ: typ}
		return nil
	},
}

// echo sends every message back as it came, until the client closes.
func echo(ws *websocket.Conn) {
	defer func() { _ = ws.Close() }()
	ws.MaxPayloadBytes = 64 << 20
	for {
		var m message
		if err := echoCodec.Receive(ws, &m); err != nil {
			return
		}
		if err := echoCodec.Send(ws, m); err != nil {
			return
		}
	}
}
