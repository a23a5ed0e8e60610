package textmodel

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGenerateIsDeterministicAndFromTheCorpus(t *testing.T) {
	m := Train(corpus)
	a, b := m.Generate("The model", 20), m.Generate("The model", 20)
	if !slices.Equal(a, b) || len(a) != 20 {
		t.Fatalf("two generations differ or are short: %q %q", a, b)
	}
	for _, tok := range a {
		if !strings.HasPrefix(tok, " ") || !strings.Contains(corpus, strings.TrimSpace(tok)) {
			t.Fatalf("token %q is not a corpus word with its space", tok)
		}
	}
}

// A streamed completion arrives as one server-sent event per token, each
// when it is made (spread over the token delays), then [DONE].
func TestCompletionStreamsOneTokenPerEvent(t *testing.T) {
	const delay = 30 * time.Millisecond
	s := New(Config{Name: "ngram", TokenDelay: delay, BasePath: "/m/"}, slog.New(slog.DiscardHandler))
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/m/v1/completions", "application/json",
		strings.NewReader(`{"model":"ngram","prompt":"A model","max_tokens":5,"stream":true,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var arrivals []time.Time
	var text []string
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil || len(c.Choices) != 1 {
			t.Fatalf("event %q: %v", data, err)
		}
		arrivals = append(arrivals, time.Now())
		text = append(text, c.Choices[0].Text)
	}
	if !done || len(text) != 5 {
		t.Fatalf("%d tokens, done %v", len(text), done)
	}
	if want := strings.Join(Train(corpus).Generate("A model", 5), ""); strings.Join(text, "") != want {
		t.Fatalf("streamed %q, want %q", strings.Join(text, ""), want)
	}
	if spread := arrivals[4].Sub(arrivals[0]); spread < 3*delay {
		t.Fatalf("five tokens arrived within %v: buffered, not streamed", spread)
	}
}

func TestCompletionRefusals(t *testing.T) {
	s := New(Config{Name: "ngram"}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(body string) (int, string) {
		resp, err := http.Post(srv.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var e struct{ Field string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Field
	}
	if code, _ := post(`{"model":"ngram"}`); code != http.StatusServiceUnavailable {
		t.Fatalf("before loading: %d, want 503", code)
	}
	_ = s.Load(context.Background())
	for body, want := range map[string]struct {
		code  int
		field string
	}{
		`{"model":"gpt","prompt":"a"}`:                  {http.StatusNotFound, "model"},
		`{"model":"ngram","prompt":"a","max_tokens":0}`: {http.StatusBadRequest, "max_tokens"},
		`{"model":"ngram","max_tokens":513}`:            {http.StatusBadRequest, "max_tokens"},
		`{"model":`:                                     {http.StatusBadRequest, ""},
	} {
		if code, field := post(body); code != want.code || field != want.field {
			t.Errorf("%s: %d %q, want %d %q", body, code, field, want.code, want.field)
		}
	}
}
