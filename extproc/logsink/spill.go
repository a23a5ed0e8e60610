package logsink

import (
	"encoding/json"
	"fmt"
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
type spill struct {
	dir      string
	maxBytes int64

	mu    sync.Mutex
	files []spillFile // oldest first
	bytes int64
	nrows int
}

type spillFile struct {
	name  string
	id    uuid.UUID
	rows  int
	bytes int64
}

func openSpill(dir string, maxBytes int64) (*spill, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spill folder: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading spill folder: %w", err)
	}
	s := &spill{dir: dir, maxBytes: maxBytes}
	for _, e := range entries {
		f, ok := parseSpillName(e.Name())
		if !ok {
			continue // a temporary file of an interrupted write, or not ours
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("reading spill folder: %w", err)
		}
		f.bytes = info.Size()
		s.files = append(s.files, f)
		s.bytes += f.bytes
		s.nrows += f.rows
	}
	slices.SortFunc(s.files, func(a, b spillFile) int { return strings.Compare(a.name, b.name) })
	return s, nil
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
	name := fmt.Sprintf("%020d-%s-%d.json", time.Now().UnixNano(), b.ID, len(b.Rows))
	tmp := filepath.Join(s.dir, name+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing spilled batch: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing spilled batch: %w", err)
	}
	s.files = append(s.files, spillFile{name: name, id: b.ID, rows: len(b.Rows), bytes: int64(len(raw))})
	s.bytes += int64(len(raw))
	s.nrows += len(b.Rows)
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
	s.bytes -= f.bytes
	s.nrows -= f.rows
	if err := os.Rename(filepath.Join(s.dir, f.name), filepath.Join(s.dir, f.name+".bad")); err != nil {
		return f.rows, fmt.Errorf("setting aside %s: %w", f.name, err)
	}
	return f.rows, nil
}
