package demomodel

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/modelserver"
	"github.com/nemesis-ml/nemesis/internal/httpjson"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Config is how the model loads and serves.
type Config struct {
	// Samples is the training set's size; each prediction costs time in
	// proportion to it.
	Samples int
	Seed    uint64
	// StartupDelay is waited before training, as a real server spends
	// time loading its weights; /ready answers 503 until both are done.
	StartupDelay time.Duration
	// Workers is how many predictions run at once; the others queue, as on
	// a model server with a fixed number of inference threads.
	Workers int
	// Latency is added to each prediction, holding its worker, as a
	// model's accelerator or I/O wait costs time but little CPU.
	Latency time.Duration
	// BasePath is where POST <BasePath>/predict is served (at the root when
	// empty or "/"), so the model answers under the prefix Envoy routes to it.
	BasePath string
}

// Server answers POST /predict, GET /ready and GET /healthz.
type Server struct {
	cfg     Config
	log     *slog.Logger
	model   atomic.Pointer[Classifier]
	workers chan struct{}
}

// New returns a server whose model is not loaded yet: call Load.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Samples < 10 {
		return nil, fmt.Errorf("samples %d: want at least 10", cfg.Samples)
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("workers %d: want at least 1", cfg.Workers)
	}
	return &Server{cfg: cfg, log: log, workers: make(chan struct{}, cfg.Workers)}, nil
}

// Load waits the start-up delay, then trains the model; from then on the
// server is ready.
func (s *Server) Load(ctx context.Context) error {
	start := time.Now()
	if err := modelserver.StartupDelay(ctx, s.cfg.StartupDelay); err != nil {
		return err
	}
	s.model.Store(Train(s.cfg.Samples, s.cfg.Seed))
	s.log.Info("model loaded", "samples", s.cfg.Samples, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	modelserver.Probes(mux, func() bool { return s.model.Load() != nil })
	base := strings.TrimSuffix(s.cfg.BasePath, "/")
	mux.HandleFunc("POST "+base+"/predict", s.predict)
	return mux
}

// request is one image, as 8 rows of 8 characters ('#' is ink, '.' or ' '
// is not) or as 64 pixel values from 0 to 1, row by row.
type request struct {
	Image  []string  `json:"image,omitempty"`
	Pixels []float32 `json:"pixels,omitempty"`
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	model := s.model.Load()
	if model == nil {
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "", "the model is loading")
		return
	}
	var req request
	if err := httpjson.Decode(w, r, 64<<10, &req); err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	img, err := req.pixels()
	if err != nil {
		httpjson.WriteBadRequest(w, err)
		return
	}
	select {
	case s.workers <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	p := model.Predict(img)
	if s.cfg.Latency > 0 {
		time.Sleep(s.cfg.Latency)
	}
	<-s.workers
	// The model's own time, queue included, as clients and tests compare
	// it with what Envoy and the autoscaler measured.
	w.Header().Set("Server-Timing", fmt.Sprintf("model;dur=%.3f", float64(time.Since(start))/float64(time.Millisecond)))
	// One line per answer: easy to read in curl and wrk output.
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p)
}

func (req request) pixels() ([]float32, error) {
	switch {
	case req.Image != nil && req.Pixels != nil:
		return nil, &validation.FieldError{Field: "image", Message: "give image or pixels, not both"}
	case req.Pixels != nil:
		if len(req.Pixels) != Side*Side {
			return nil, &validation.FieldError{Field: "pixels", Message: fmt.Sprintf("want %d values, got %d", Side*Side, len(req.Pixels))}
		}
		for i, v := range req.Pixels {
			if !(v >= 0 && v <= 1) {
				return nil, &validation.FieldError{Field: fmt.Sprintf("pixels[%d]", i), Message: fmt.Sprintf("want a value from 0 to 1, got %v", v)}
			}
		}
		return req.Pixels, nil
	case req.Image != nil:
		if len(req.Image) != Side {
			return nil, &validation.FieldError{Field: "image", Message: fmt.Sprintf("want %d rows, got %d", Side, len(req.Image))}
		}
		img := make([]float32, 0, Side*Side)
		for y, row := range req.Image {
			if len(row) != Side {
				return nil, &validation.FieldError{Field: fmt.Sprintf("image[%d]", y), Message: fmt.Sprintf("want %d characters, got %d", Side, len(row))}
			}
			for _, c := range row {
				switch c {
				case '#':
					img = append(img, 1)
				case '.', ' ':
					img = append(img, 0)
				default:
					return nil, &validation.FieldError{Field: fmt.Sprintf("image[%d]", y), Message: fmt.Sprintf("want '#', '.' or ' ', got %q", c)}
				}
			}
		}
		return img, nil
	default:
		return nil, &validation.FieldError{Field: "image", Message: "give image (8 rows of 8 characters) or pixels (64 values)"}
	}
}

// Run listens on addr at once, loads the model in the background and
// serves until ctx ends, then lets requests in flight finish.
func Run(ctx context.Context, log *slog.Logger, addr string, cfg Config) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	return modelserver.Run(ctx, log, addr, s.Load, s.Handler())
}
