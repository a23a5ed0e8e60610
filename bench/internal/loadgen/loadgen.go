// Package loadgen runs Debian's wrk, the load generator of the benchmarks,
// and reads its figures.
package loadgen

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// Result is one wrk run's throughput and latency percentiles.
type Result struct {
	RPS      float64
	P50, P99 time.Duration
}

var (
	rpsLine = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50Line = regexp.MustCompile(`\s50%\s+([0-9.]+)(us|ms|s)`)
	p99Line = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
	errLine = regexp.MustCompile(`Non-2xx or 3xx responses|Socket errors`)
)

// Run runs wrk (the binary at bin) with two threads and connections open
// against target for duration (wrk's syntax, e.g. "5s"). Any error answer
// or socket error fails b: a ratio of failing runs means nothing.
func Run(b testing.TB, bin, target string, connections int, duration string) Result {
	b.Helper()
	return run(b, exec.Command(bin, "-t2", "-c"+strconv.Itoa(connections), "-d"+duration, "--latency", target), target)
}

// RunOn is Run with one thread, kept on CPU cpu (by util-linux's taskset).
func RunOn(b testing.TB, bin string, cpu int, target string, connections int, duration string) Result {
	b.Helper()
	return run(b, exec.Command("taskset", "-c", strconv.Itoa(cpu), bin, "-t1", "-c"+strconv.Itoa(connections), "-d"+duration, "--latency", target), target)
}

func run(b testing.TB, cmd *exec.Cmd, target string) Result {
	b.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", target, err, out)
	}
	if errLine.Match(out) {
		b.Fatalf("wrk saw errors against %s:\n%s", target, out)
	}
	m := rpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("no Requests/sec in wrk output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	return Result{RPS: rps, P50: latency(b, p50Line, out), P99: latency(b, p99Line, out)}
}

func latency(b testing.TB, re *regexp.Regexp, out []byte) time.Duration {
	b.Helper()
	m := re.FindSubmatch(out)
	if m == nil {
		b.Fatalf("no %s in wrk output:\n%s", re, out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[2])]
	return time.Duration(v * float64(unit))
}
