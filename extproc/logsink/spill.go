package logsink

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// spill keeps batches as files named <unix nanos>-<batch id>-<rows>.json,
// so the oldest sorts first and counts are known without reading them.
// Leftovers (.bad: unreadable batches set aside; .tmp: a write cut short)
// count against maxBytes until they are maxAge old, then are removed.
type spill struct {
	dir      string
	maxBytes int64
	maxAge   time.Duration
	log      *slog.Logger

	mu        sync.Mutex
	files     []spillFile // oldest first
	leftovers []leftover
	bytes     int64 // of files and leftovers
	nrows     int
}

type leftover struct {
	name  string
	bytes int64
	since time.Time
}

type spillFile struct {
	name  string
	id    uuid.UUID
	rows  int
	bytes int64
}

func openSpill(dir string, maxBytes int64, maxAge time.Duration, log *slog.Logger) (*spill, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spill folder: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading spill folder: %w", err)
	}
	s := &spill{dir: dir, maxBytes: maxBytes, maxAge: maxAge, log: log}
	for _, e := range entries {
		f, ok := parseSpillName(e.Name())
		if !ok && !strings.HasSuffix(e.Name(), ".bad") && !strings.HasSuffix(e.Name(), ".tmp") {
			continue // not ours
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("reading spill folder: %w", err)
		}
		if !ok {
			s.leftovers = append(s.leftovers, leftover{name: e.Name(), bytes: info.Size(), since: info.ModTime()})
			s.bytes += info.Size()
			continue
		}
		f.bytes = info.Size()
		s.files = append(s.files, f)
		s.bytes += f.bytes
		s.nrows += f.rows
	}
	slices.SortFunc(s.files, func(a, b spillFile) int { return strings.Compare(a.name, b.name) })
	if len(s.leftovers) > 0 {
		log.Warn("the spill folder holds leftovers of earlier runs; they count against its size until they expire",
			"dir", dir, "files", len(s.leftovers), "max_age", maxAge)
	}
	s.expire(time.Now())
	return s, nil
}

// expire removes the leftovers older than maxAge.
func (s *spill) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.leftovers[:0]
	for _, l := range s.leftovers {
		if now.Sub(l.since) < s.maxAge {
			kept = append(kept, l)
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, l.name)); err != nil && !os.IsNotExist(err) {
			s.log.Error("removing an expired spill leftover", "file", l.name, "err", err)
			kept = append(kept, l)
			continue
		}
		s.log.Info("removed an expired spill leftover", "file", l.name, "bytes", l.bytes)
		s.bytes -= l.bytes
	}
	s.leftovers = kept
}

func parseSpillName(name string) (spillFile, bool) {
	base, ok := strings.CutSuffix(name, ".json")
	parts := strings.Split(base, "-")
	if !ok || len(parts) != 7 { // nanos, five uuid groups, rows
		return spillFile{}, false
	}
	id, err := uuid.Parse(strings.Join(parts[1:6], "-"))
	rows, err2 := strconv.Atoi(parts[6])
	if err != nil || err2 != nil {
		return spillFile{}, false
	}
	return spillFile{name: name, id: id, rows: rows}, true
}

func (s *spill) rows() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nrows
}

// put writes b to a new file, or fails when that would pass maxBytes.
func (s *spill) put(b *batch) error {
	raw, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encoding batch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes+int64(len(raw)) > s.maxBytes {
		return fmt.Errorf("spill folder would pass %d bytes", s.maxBytes)
	}
	name := fmt.Sprintf("%020d-%s-%d.json", time.Now().UnixNano(), b.ID, b.count())
	tmp := filepath.Join(s.dir, name+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing spilled batch: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing spilled batch: %w", err)
	}
	s.files = append(s.files, spillFile{name: name, id: b.ID, rows: b.count(), bytes: int64(len(raw))})
	s.bytes += int64(len(raw))
	s.nrows += b.count()
	return nil
}

// oldest reads the oldest batch, or returns nil when there is none.
func (s *spill) oldest() (*batch, error) {
	s.mu.Lock()
	if len(s.files) == 0 {
		s.mu.Unlock()
		return nil, nil
	}
	f := s.files[0]
	s.mu.Unlock()
	raw, err := os.ReadFile(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, fmt.Errorf("reading spilled batch %s: %w", f.name, err)
	}
	var b batch
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("decoding spilled batch %s: %w", f.name, err)
	}
	return &b, nil
}

// remove deletes the oldest file, which must hold batch id.
func (s *spill) remove(id uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 || s.files[0].id != id {
		return fmt.Errorf("batch %s is not the oldest spilled", id)
	}
	f := s.files[0]
	s.files = s.files[1:]
	s.bytes -= f.bytes
	s.nrows -= f.rows
	if err := os.Remove(filepath.Join(s.dir, f.name)); err != nil {
		return fmt.Errorf("removing spilled batch: %w", err)
	}
	return nil
}

// quarantine renames the oldest file to <name>.bad, out of the queue, and
// returns how many rows it held.
func (s *spill) quarantine() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 {
		return 0, nil
	}
	f := s.files[0]
	s.files = s.files[1:]
	s.nrows -= f.rows
	if err := os.Rename(filepath.Join(s.dir, f.name), filepath.Join(s.dir, f.name+".bad")); err != nil {
		s.bytes -= f.bytes
		return f.rows, fmt.Errorf("setting aside %s: %w", f.name, err)
	}
	s.leftovers = append(s.leftovers, leftover{name: f.name + ".bad", bytes: f.bytes, since: time.Now()})
	return f.rows, nil
}
