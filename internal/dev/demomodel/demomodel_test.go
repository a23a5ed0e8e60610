package demomodel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nemesis-ml/nemesis/internal/dev/demomodel"
)

func TestClassifierRecognisesTheFontAtEveryPosition(t *testing.T) {
	model := demomodel.Train(5000, 1)
	for d := range 10 {
		for dx := range 4 {
			for dy := range 2 {
				if p := model.Predict(demomodel.Glyph(d, dx, dy)); p.Digit != d {
					t.Errorf("digit %d at (%d,%d): predicted %d, votes %v", d, dx, dy, p.Digit, p.Votes)
				}
			}
		}
	}
}

func TestPredictAnswersHandDrawnDigits(t *testing.T) {
	s := newServer(t, demomodel.Config{Samples: 5000, Seed: 7, Workers: 1})
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	for name, tc := range map[string]struct {
		image []string
		want  int
	}{
		// Drawn by hand, unlike the font: a slanted 1, a 7 with a short
		// bar, a 4 with an open top.
		"one":   {[]string{"........", "....#...", "...##...", "....#...", "....#...", "...#....", "...#....", "..###..."}, 1},
		"seven": {[]string{"........", ".#####..", ".....#..", "....#...", "....#...", "...#....", "...#....", "...#...."}, 7},
		"four":  {[]string{"........", ".#..#...", ".#..#...", ".#..#...", ".#####..", "....#...", "....#...", "....#..."}, 4},
		"zero":  {[]string{"........", "..###...", ".#...#..", ".#...#..", ".#...#..", ".#...#..", ".#...#..", "..###..."}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			status, body := post(t, srv.URL+"/predict", map[string]any{"image": tc.image})
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			var p demomodel.Prediction
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Digit != tc.want {
				t.Fatalf("predicted %d (votes %v), want %d", p.Digit, p.Votes, tc.want)
			}
			if p.Confidence <= 0 || p.Confidence > 1 {
				t.Fatalf("confidence %v out of (0, 1]", p.Confidence)
			}
		})
	}

	pixels := demomodel.Glyph(3, 1, 0)
	status, body := post(t, srv.URL+"/predict", map[string]any{"pixels": pixels})
	if status != http.StatusOK || !strings.Contains(string(body), `"digit":3,`) {
		t.Fatalf("pixels of a 3: %d %s", status, body)
	}
}

func TestPredictRefusesBadImagesNamingTheField(t *testing.T) {
	s := newServer(t, demomodel.Config{Samples: 100, Seed: 1, Workers: 1})
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	for name, tc := range map[string]struct {
		body  any
		field string
	}{
		"empty":         {map[string]any{}, "image"},
		"short row":     {map[string]any{"image": []string{"#", "", "", "", "", "", "", ""}}, "image[0]"},
		"odd ink":       {map[string]any{"image": []string{"........", "...x....", "", "", "", "", "", ""}}, "image[1]"},
		"few pixels":    {map[string]any{"pixels": []float32{0, 1}}, "pixels"},
		"pixel too big": {map[string]any{"pixels": append(make([]float32, 63), 2)}, "pixels[63]"},
		"unknown":       {map[string]any{"tensor": 1}, "tensor"},
	} {
		t.Run(name, func(t *testing.T) {
			status, body := post(t, srv.URL+"/predict", tc.body)
			var e struct{ Field, Error string }
			_ = json.Unmarshal(body, &e)
			if status != http.StatusBadRequest || e.Field != tc.field || e.Error == "" {
				t.Fatalf("got %d %s, want 400 naming %q", status, body, tc.field)
			}
		})
	}
}

func TestNotReadyUntilLoaded(t *testing.T) {
	s := newServer(t, demomodel.Config{Samples: 100, Seed: 1, Workers: 1, StartupDelay: 300 * time.Millisecond})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	loaded := make(chan error, 1)
	start := time.Now()
	go func() { loaded <- s.Load(context.Background()) }()

	if code := get(t, srv.URL+"/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready while loading: %d, want 503", code)
	}
	if status, _ := post(t, srv.URL+"/predict", map[string]any{"pixels": make([]float32, 64)}); status != http.StatusServiceUnavailable {
		t.Fatalf("/predict while loading: %d, want 503", status)
	}
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("loaded after %v, before the start-up delay", took)
	}
	if code := get(t, srv.URL+"/ready"); code != http.StatusOK {
		t.Fatalf("/ready once loaded: %d", code)
	}
}

func newServer(t *testing.T, cfg demomodel.Config) *demomodel.Server {
	t.Helper()
	s, err := demomodel.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func post(t *testing.T, url string, v any) (int, []byte) {
	t.Helper()
	raw, _ := json.Marshal(v)
	resp, err := http.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
