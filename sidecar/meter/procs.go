package meter

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat. The kernel exports
// them in USER_HZ, which is 100 on every Linux architecture Go supports.
const userHZ = 100

// pageSize converts the RSS pages of /proc/PID/stat into bytes.
var pageSize = uint64(os.Getpagesize())

// procSource sums the CPU time and resident memory of processes from /proc:
// the tree under one process, or every process /proc shows (the processes
// of all containers of a pod with shareProcessNamespace: true).
type procSource struct {
	proc string
	root int // 0: every process
	// seen holds each live process's CPU ticks at the previous read, so a
	// process that exits between reads takes none of the total back with it.
	seen  map[procKey]uint64
	ticks uint64
}

// procKey tells a process from a later one that reuses its PID.
type procKey struct {
	pid       int
	startTime uint64
}

type procStat struct {
	key   procKey
	ppid  int
	ticks uint64 // utime + stime
	rss   uint64 // pages
}

func newProcSource(proc string, root int) *procSource {
	return &procSource{proc: proc, root: root, seen: map[procKey]uint64{}}
}

func (s *procSource) String() string {
	if s.root == 0 {
		return "every process in " + s.proc
	}
	return fmt.Sprintf("process tree of pid %d in %s", s.root, s.proc)
}

func (s *procSource) Read() (Usage, error) {
	stats, err := readProcStats(s.proc)
	if err != nil {
		return Usage{}, err
	}
	if s.root != 0 {
		stats = tree(stats, s.root)
		if len(stats) == 0 {
			return Usage{}, fmt.Errorf("process %d is gone", s.root)
		}
	}
	seen := make(map[procKey]uint64, len(stats))
	var rss uint64
	for _, st := range stats {
		prev, ok := s.seen[st.key]
		switch {
		case !ok:
			s.ticks += st.ticks
		case st.ticks > prev:
			s.ticks += st.ticks - prev
		}
		seen[st.key] = st.ticks
		rss += st.rss
	}
	s.seen = seen
	return Usage{
		CPU:    time.Duration(s.ticks) * time.Second / userHZ,
		Memory: rss * pageSize,
	}, nil
}

// tree keeps root and its descendants.
func tree(stats []procStat, root int) []procStat {
	children := map[int][]int{}
	byPID := map[int]procStat{}
	for _, st := range stats {
		children[st.ppid] = append(children[st.ppid], st.key.pid)
		byPID[st.key.pid] = st
	}
	if _, ok := byPID[root]; !ok {
		return nil
	}
	var out []procStat
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		out = append(out, byPID[pid])
		queue = append(queue, children[pid]...)
	}
	return out
}

func readProcStats(proc string) ([]procStat, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var stats []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "stat"))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // exited while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("reading process %d: %w", pid, err)
		}
		st, err := parseProcStat(pid, b)
		if err != nil {
			return nil, err
		}
		stats = append(stats, st)
	}
	return stats, nil
}

// parseProcStat reads /proc/PID/stat (proc(5)). The command name in
// parentheses may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseProcStat(pid int, b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: no command name", pid)
	}
	// fields[0] is field 3 (state) of proc(5).
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 22 {
		return procStat{}, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(string(fields[field-3]), 10, 64)
		return v
	}
	return procStat{
		key:   procKey{pid: pid, startTime: num(22)},
		ppid:  int(num(4)),
		ticks: num(14) + num(15),
		rss:   num(24),
	}, nil
}
