package xds

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nemesis-ml/nemesis/xds/settings"
	"github.com/nemesis-ml/nemesis/xds/translate"
)

func settingsOf(version int64) map[string]settings.Settings {
	s := settings.Defaults("prod")
	s.Default, s.Version = false, version
	s.Policy = []settings.Policy{settings.LeastConnections, settings.Random}[version%2]
	s.MaxConnections = int(100 + version)
	return map[string]settings.Settings{"prod": s}
}

func TestOlderSettingsNeverReplaceNewer(t *testing.T) {
	c := New(slog.New(slog.DiscardHandler), nil, translate.Options{ListenerAddress: "127.0.0.1", ListenerPort: 10000})
	if err := c.applySettings(t.Context(), settingsOf(6)); err != nil {
		t.Fatal(err)
	}
	// Read before 6 was stored, applied after it: ignored, nothing published.
	if err := c.applySettings(t.Context(), settingsOf(5)); err != nil {
		t.Fatal(err)
	}
	if got := c.settings["prod"]; got.Version != 6 || got.MaxConnections != 106 || c.seq != 1 {
		t.Fatalf("holding version %d (%d connections) after %d publications, want version 6 published once", got.Version, got.MaxConnections, c.seq)
	}

	// Two hundred versions applied concurrently in any order end on the newest.
	versions := rand.Perm(200)
	var wg sync.WaitGroup
	for _, v := range versions {
		wg.Go(func() {
			if err := c.applySettings(t.Context(), settingsOf(int64(7+v))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := c.settings["prod"]; got.Version != 206 || got.MaxConnections != 306 {
		t.Fatalf("holding version %d, want 206", got.Version)
	}
}
