// Package meter measures what a model pod uses: CPU in millicores and memory
// in MiB from the pod's cgroup (v2 or v1) or from its processes in /proc,
// and disk in MiB under configured paths.
package meter

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Usage is what a source reads at one instant.
type Usage struct {
	// CPU is the cumulative CPU time of the metered processes.
	CPU time.Duration
	// Memory is the bytes in use now.
	Memory uint64
}

// Source reads a pod's CPU and memory usage.
type Source interface {
	Read() (Usage, error)
	// String says what is metered, for logs.
	String() string
}

// Sources a Config may name.
const (
	SourceAuto      = "auto"
	SourceCgroup    = "cgroup"
	SourceProcesses = "processes"
	SourceOff       = "off"
)

// Config says what to meter.
type Config struct {
	// Source is auto, cgroup, processes or off.
	Source string
	// Cgroup is a cgroup path as /proc/PID/cgroup writes it (for example
	// /kubepods/burstable/pod<uid>). Empty means the pod cgroup found from
	// this process's own cgroup.
	Cgroup string
	// PID roots the process tree to meter; 0 means every process in /proc.
	PID int
	// DiskPaths are folders whose disk usage is summed (model cache, emptyDir).
	DiskPaths []string
	// DiskInterval is how often the disk paths are walked; walking is far
	// costlier than reading a cgroup, and disk usage changes slowly.
	DiskInterval time.Duration

	// Proc and Self default to /proc and /proc/self; tests point them elsewhere.
	Proc, Self string
}

// Reading is a pod's usage over the interval since the previous reading.
type Reading struct {
	CPUMillicores float64
	MemoryMiB     float64
	DiskMiB       float64
	// DiskSkipped are the paths or folders that this reading's disk walk
	// could not read, with why; DiskMiB leaves them out. Empty when the
	// disk was not walked this time.
	DiskSkipped []error
}

// Meter turns a source's counters into rates.
type Meter struct {
	src      Source // nil when CPU and memory are off
	paths    []string
	diskIntv time.Duration

	mu       sync.Mutex
	prev     Usage
	prevAt   time.Time
	disk     uint64
	diskAt   time.Time
	diskRead bool
}

// ErrNoSource says auto found nothing that meters the pod rather than the
// whole machine.
var ErrNoSource = errors.New("no pod cgroup is visible and the process namespace is not shared with the pod " +
	"(set shareProcessNamespace: true, or name a cgroup or process to meter, or turn metering off)")

// New picks the source cfg names, takes a first reading and returns the Meter.
func New(cfg Config) (*Meter, error) {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Self == "" {
		cfg.Self = cfg.Proc + "/self"
	}
	if cfg.DiskInterval <= 0 {
		cfg.DiskInterval = 10 * time.Second
	}
	src, err := pickSource(cfg)
	if err != nil {
		return nil, err
	}
	m := &Meter{src: src, paths: cfg.DiskPaths, diskIntv: cfg.DiskInterval}
	if src != nil {
		if m.prev, err = src.Read(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", src, err)
		}
		m.prevAt = time.Now()
	}
	return m, nil
}

// Source describes what the meter reads, for logs.
func (m *Meter) Source() string {
	if m.src == nil {
		return "off"
	}
	return m.src.String()
}

func pickSource(cfg Config) (Source, error) {
	switch cfg.Source {
	case SourceOff:
		return nil, nil
	case SourceProcesses:
		return newProcSource(cfg.Proc, cfg.PID), nil
	case SourceCgroup:
		return cgroupFor(cfg)
	case SourceAuto, "":
	default:
		return nil, fmt.Errorf("unknown meter source %q", cfg.Source)
	}
	switch {
	case cfg.Cgroup != "":
		return cgroupFor(cfg)
	case cfg.PID != 0:
		return newProcSource(cfg.Proc, cfg.PID), nil
	}
	src, err := cgroupFor(cfg)
	if err == nil {
		return src, nil
	}
	if !errors.Is(err, errNotVisible) {
		return nil, err
	}
	if sharedPodPIDNamespace(cfg.Proc) {
		return newProcSource(cfg.Proc, 0), nil
	}
	return nil, ErrNoSource
}

// cgroupFor finds the files of the configured cgroup, or of this process's
// pod cgroup when none is configured.
func cgroupFor(cfg Config) (Source, error) {
	f, err := os.Open(cfg.Self + "/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		return nil, err
	}
	var paths procCgroups
	if cfg.Cgroup != "" {
		paths = procCgroups{v2: cfg.Cgroup, v1: map[string]string{"cpuacct": cfg.Cgroup, "memory": cfg.Cgroup}}
	} else {
		cf, err := os.Open(cfg.Self + "/cgroup")
		if err != nil {
			return nil, fmt.Errorf("reading own cgroup: %w", err)
		}
		defer cf.Close()
		own, err := parseProcCgroup(cf)
		if err != nil {
			return nil, err
		}
		paths = procCgroups{v2: podCgroup(own.v2), v1: map[string]string{
			"cpuacct": podCgroup(own.v1["cpuacct"]),
			"memory":  podCgroup(own.v1["memory"]),
		}}
	}
	src, err := findCgroupFiles(mounts, paths)
	if err != nil {
		if cfg.Cgroup != "" {
			return nil, fmt.Errorf("metering cgroup %s: %w", cfg.Cgroup, err)
		}
		return nil, fmt.Errorf("metering the pod cgroup: %w", err)
	}
	return src, nil
}

// sharedPodPIDNamespace reports whether this process shares its PID
// namespace with the rest of a Kubernetes pod: then PID 1 is the pod's
// pause container, and every process /proc shows belongs to the pod.
func sharedPodPIDNamespace(proc string) bool {
	b, err := os.ReadFile(proc + "/1/comm")
	return err == nil && strings.TrimSpace(string(b)) == "pause"
}

// Read returns the usage since the previous Read (or New). Memory and disk
// are the current values; disk is re-measured at most every DiskInterval.
// It fails only when CPU and memory cannot be read: unreadable disk paths
// are left out of DiskMiB and listed in DiskSkipped.
func (m *Meter) Read() (Reading, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r Reading
	now := time.Now()
	if m.src != nil {
		u, err := m.src.Read()
		if err != nil {
			return Reading{}, fmt.Errorf("reading %s: %w", m.src, err)
		}
		if elapsed := now.Sub(m.prevAt); elapsed > 0 && u.CPU >= m.prev.CPU {
			r.CPUMillicores = float64(u.CPU-m.prev.CPU) / float64(elapsed) * 1000
		}
		r.MemoryMiB = float64(u.Memory) / (1 << 20)
		m.prev, m.prevAt = u, now
	}
	if len(m.paths) > 0 && (!m.diskRead || now.Sub(m.diskAt) >= m.diskIntv) {
		m.disk, r.DiskSkipped = diskUsage(m.paths)
		m.diskAt, m.diskRead = now, true
	}
	r.DiskMiB = float64(m.disk) / (1 << 20)
	return r, nil
}
