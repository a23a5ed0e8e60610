// Package cpu reads the CPU time processes have used, from /proc, so that
// benchmarks can say where the time of a run went (per process, per
// request) and not only how fast it was, and pins processes to CPUs.
package cpu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ticks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on Linux.
const ticks = 100

// Of returns the user and system CPU time pid has used.
func Of(pid int) time.Duration {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: the fields
	// after it start at the last ')'.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / ticks
}

// Named returns the CPU time used by every process whose command name
// (/proc/<pid>/comm) is name, such as all of a PostgreSQL server's.
func Named(name string) time.Duration {
	dirs, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == name {
			total += Of(pid)
		}
	}
	return total
}

// Self returns the CPU time this process has used.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Pin keeps every thread of process pid on the given CPUs (threads it
// starts later inherit it) and returns what undoes it: benchmarks give a
// process a core of its own the way a node would.
func Pin(pid int, cpus ...int) (restore func(), err error) {
	var set, all unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for c := range runtime.NumCPU() {
		all.Set(c)
	}
	if err := affinity(pid, &set); err != nil {
		return nil, err
	}
	return func() { _ = affinity(pid, &all) }, nil
}

func affinity(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("listing the threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may have ended since the listing.
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pinning thread %d of %d: %w", tid, pid, err)
		}
	}
	return nil
}
