package meter

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cpuWindow is how long a CPU reading averages over; long enough that a
// scheduler hiccup on a busy machine moves the reading by little.
const cpuWindow = 3 * time.Second

func readAfter(t *testing.T, m *Meter, wait time.Duration) Reading {
	t.Helper()
	time.Sleep(wait)
	r, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCgroupChildBurningOneCoreReadsAboutOneThousandMillicores(t *testing.T) {
	for name, hierarchies := range map[string][]string{
		"v1 cpuacct.usage": {"cpuacct", "memory"},
		// This machine's v2 hierarchy has no memory controller, so memory
		// comes from v1 while CPU comes from v2's cpu.stat.
		"v2 cpu.stat": {"unified", "memory"},
	} {
		t.Run(name, func(t *testing.T) {
			h := startHelper(t, "burn", false)
			cg := testCgroup(t, h, hierarchies...)
			m, err := New(Config{Source: SourceCgroup, Cgroup: cg})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("metering %s", m.Source())
			want := "cpuacct.usage"
			if hierarchies[0] == "unified" {
				want = "cpu.stat"
			}
			if got := filepath.Base(m.src.(*cgroupSource).cpuFile); got != want {
				t.Fatalf("CPU read from %s, want %s", got, want)
			}
			r := readAfter(t, m, cpuWindow)
			if r.CPUMillicores < 800 || r.CPUMillicores > 1200 {
				t.Fatalf("CPU = %.0f millicores, want 800-1200", r.CPUMillicores)
			}
		})
	}
}

func TestCgroupChildAllocating200MiBRaisesMemoryByAboutThat(t *testing.T) {
	h := startHelper(t, "alloc", false)
	cg := testCgroup(t, h, "cpuacct", "memory")
	expectAllocationSeen(t, h, Config{Source: SourceCgroup, Cgroup: cg})
}

func TestProcessTreeIncludesDescendants(t *testing.T) {
	// The burning helper is sh's child: only counting descendants finds it.
	h := startHelper(t, "burn", true)
	m, err := New(Config{Source: SourceProcesses, PID: h.cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metering %s", m.Source())
	r := readAfter(t, m, cpuWindow)
	if r.CPUMillicores < 800 || r.CPUMillicores > 1200 {
		t.Fatalf("CPU = %.0f millicores, want 800-1200", r.CPUMillicores)
	}
	if r.MemoryMiB <= 0 {
		t.Fatalf("memory = %.1f MiB, want the helper's resident memory", r.MemoryMiB)
	}
}

func TestProcessTreeAllocating200MiBRaisesMemoryByAboutThat(t *testing.T) {
	h := startHelper(t, "alloc", false)
	expectAllocationSeen(t, h, Config{Source: SourceProcesses, PID: h.cmd.Process.Pid})
}

// expectAllocationSeen tells the alloc helper to allocate 200 MiB and
// checks that a meter of cfg sees memory rise by about that.
func expectAllocationSeen(t *testing.T, h *helper, cfg Config) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := readAfter(t, m, 0)
	if _, err := h.stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	h.expect(t, "allocated")
	after := readAfter(t, m, 0)
	if d := after.MemoryMiB - before.MemoryMiB; d < 190 || d > 220 {
		t.Fatalf("memory rose by %.1f MiB (%.1f to %.1f), want about 200", d, before.MemoryMiB, after.MemoryMiB)
	}
}

func TestProcessTreeOfAGoneProcessFails(t *testing.T) {
	h := startHelper(t, "burn", false)
	m, err := New(Config{Source: SourceProcesses, PID: h.cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	if _, err := m.Read(); err == nil {
		t.Fatal("reading the tree of an exited process succeeded")
	}
}

func TestWriting50MiBUnderAMeteredPathRaisesDiskByAboutThat(t *testing.T) {
	cache, scratch := t.TempDir(), t.TempDir()
	m, err := New(Config{Source: SourceOff, DiskPaths: []string{cache, scratch}, DiskInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	before := readAfter(t, m, 0)
	file := filepath.Join(scratch, "weights.bin")
	writeRandom(t, file, 50<<20)
	// A hard link is the same blocks: du counts them once.
	if err := os.Link(file, filepath.Join(cache, "weights-link.bin")); err != nil {
		t.Fatal(err)
	}
	after := readAfter(t, m, 0)
	if d := after.DiskMiB - before.DiskMiB; d < 49 || d > 52 {
		t.Fatalf("disk rose by %.1f MiB (%.1f to %.1f), want about 50", d, before.DiskMiB, after.DiskMiB)
	}
	if after.CPUMillicores != 0 || after.MemoryMiB != 0 {
		t.Fatalf("metering off read CPU %.0f, memory %.0f", after.CPUMillicores, after.MemoryMiB)
	}
}

func TestDiskIsWalkedAtMostEveryDiskInterval(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Source: SourceOff, DiskPaths: []string{dir}, DiskInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	before := readAfter(t, m, 0)
	writeRandom(t, filepath.Join(dir, "f"), 4<<20)
	if after := readAfter(t, m, 0); after.DiskMiB != before.DiskMiB {
		t.Fatalf("disk re-measured within the interval: %.1f then %.1f MiB", before.DiskMiB, after.DiskMiB)
	}
}

func TestUnreadableDiskPathsAreSkippedAndTheRestMeasured(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, filepath.Join(dir, "f"), 4<<20)
	missing := filepath.Join(t.TempDir(), "absent")
	m, err := New(Config{Source: SourceOff, DiskPaths: []string{missing, dir}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Read()
	if err != nil {
		t.Fatalf("a missing disk path failed the whole reading: %v", err)
	}
	if len(r.DiskSkipped) != 1 || !strings.Contains(r.DiskSkipped[0].Error(), missing) {
		t.Fatalf("skipped %v, want the missing path named", r.DiskSkipped)
	}
	if r.DiskMiB < 3.9 || r.DiskMiB > 4.5 {
		t.Fatalf("disk %.1f MiB, want the readable path's 4", r.DiskMiB)
	}
}

func writeRandom(t *testing.T, file string, size int) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for written := 0; written < size; written += len(buf) {
		_, _ = rand.Read(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	// Blocks are allocated for sure once the data is on disk.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
