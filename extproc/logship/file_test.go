package logship

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fakeEnvoy appends records to its access-log file as Envoy's file logger
// does: on an open descriptor, so a renamed file keeps receiving records
// until Envoy reopens. Like Envoy, it reopens on its next flush after
// being asked, not at once.
type fakeEnvoy struct {
	t      *testing.T
	path   string
	f      *os.File
	next   int
	asked  bool
	reopen int
}

func newFakeEnvoy(t *testing.T) *fakeEnvoy {
	e := &fakeEnvoy{t: t, path: filepath.Join(t.TempDir(), "access.log")}
	e.open()
	t.Cleanup(func() { _ = e.f.Close() })
	return e
}

func (e *fakeEnvoy) open() {
	f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	e.f = f
}

// flush writes n records, then reopens if it was asked to.
func (e *fakeEnvoy) flush(n int) {
	e.write(n)
	if e.asked {
		_ = e.f.Close()
		e.open()
		e.asked = false
		e.reopen++
	}
}

// write writes n records of two lines to the file Envoy has open.
func (e *fakeEnvoy) write(n int) {
	for range n {
		if _, err := fmt.Fprintf(e.f, "%d %070d\nm GET\n\n", e.next, 0); err != nil {
			e.t.Fatal(err)
		}
		e.next++
	}
}

func (e *fakeEnvoy) ask() error { e.asked = true; return nil }

// step is one turn of Run's loop with serve acknowledging: the records
// read, or nil after an idle turn. meanwhile, when given, runs between
// finding nothing new and the idle work, as Envoy's flush thread may.
func step(t *testing.T, f *follower, meanwhile ...func()) []int {
	t.Helper()
	records, end, err := f.records(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.rotate(); err != nil {
			t.Fatal(err)
		}
	}()
	if end == f.offset {
		for _, m := range meanwhile {
			m()
		}
		if err := f.idle(); err != nil {
			t.Fatal(err)
		}
		return nil
	}
	var out []int
	for _, r := range records {
		out = append(out, number(t, r))
	}
	if err := f.advance(end); err != nil {
		t.Fatal(err)
	}
	return out
}

func number(t *testing.T, r []byte) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(string(r), "%d ", &n); err != nil || !strings.HasSuffix(string(r), "\nm GET\n") {
		t.Fatalf("record %q: %v", r, err)
	}
	return n
}

func TestEveryRecordOnceInOrderAcrossRotations(t *testing.T) {
	e := newFakeEnvoy(t)
	f := newFollower(e.path, 2048, e.ask)
	defer f.close()
	var got []int
	for i := range 400 {
		e.write(i % 7) // some turns find nothing new
		// Envoy writing its last records to the renamed file and reopening
		// just after the follower found nothing new in it.
		got = append(got, step(t, f, func() { e.flush(1) })...)
	}
	for range 10 { // Envoy quiet: the last rotation finishes
		e.flush(0)
		got = append(got, step(t, f)...)
	}
	if want := upTo(e.next); !slices.Equal(got, want) {
		t.Fatalf("read %d records, want %d in order, once each (first difference near %d)", len(got), len(want), firstDiff(got, want))
	}
	if e.reopen < 10 {
		t.Fatalf("%d rotations of %d records of about 80 bytes past 2 KiB", e.reopen, e.next)
	}
	if _, err := os.Stat(e.path + ".1"); !os.IsNotExist(err) {
		t.Fatalf("the rotated file is left: %v", err)
	}
}

// upTo is 0, 1, ... n-1: every record the fake Envoy wrote.
func upTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestIncompleteRecordWaitsForItsEnd(t *testing.T) {
	e := newFakeEnvoy(t)
	f := newFollower(e.path, 1<<20, e.ask)
	defer f.close()
	if _, err := e.f.WriteString("0 x\nm GET\n\n1 y\nm GE"); err != nil {
		t.Fatal(err)
	}
	if got := step(t, f); !slices.Equal(got, []int{0}) {
		t.Fatalf("read %v, want [0]", got)
	}
	for _, more := range []string{"T\n", ""} {
		if _, err := e.f.WriteString(more); err != nil {
			t.Fatal(err)
		}
		if got := step(t, f); got != nil {
			t.Fatalf("read %v of a record without its empty line", got)
		}
	}
	if _, err := e.f.WriteString("\n\n"); err != nil { // an empty record is no record
		t.Fatal(err)
	}
	if got := step(t, f); !slices.Equal(got, []int{1}) {
		t.Fatalf("read %v, want [1]", got)
	}
}

func TestARestartResumesAfterTheLastAcknowledgedLine(t *testing.T) {
	for _, midRotation := range []bool{false, true} {
		t.Run("mid rotation "+strconv.FormatBool(midRotation), func(t *testing.T) {
			e := newFakeEnvoy(t)
			f := newFollower(e.path, 1500, e.ask)
			e.flush(10)
			got := step(t, f)
			e.flush(10)
			if midRotation {
				// Past the size: renamed, Envoy asked, not reopened yet.
				got = append(got, step(t, f)...)
				if step(t, f) != nil || !f.rotating {
					t.Fatal("no rotation under way")
				}
				e.asked = false // Envoy does not reopen before the restart
				e.flush(5)
			} else {
				e.flush(5)
			}
			// Read but not acknowledged: the restart reads it again.
			if _, _, err := f.records(4096); err != nil {
				t.Fatal(err)
			}
			f.close()

			f = newFollower(e.path, 1500, e.ask)
			defer f.close()
			for range 5 {
				e.flush(0)
				got = append(got, step(t, f)...)
			}
			if want := upTo(e.next); !slices.Equal(got, want) {
				t.Fatalf("read %v, want %v", got, want)
			}
		})
	}
}

func TestABacklogPastTwiceTheRotationGivesUpTheOldFile(t *testing.T) {
	e := newFakeEnvoy(t)
	f := newFollower(e.path, 1000, e.ask)
	defer f.close()
	e.flush(20) // 1600 bytes
	if _, end, _ := f.records(4096); end == f.offset {
		t.Fatal("nothing read")
	}
	// serve unreachable: nothing advances. The file is rotated all the same.
	if err := f.rotate(); err != nil || !f.rotating {
		t.Fatalf("not rotated: %v", err)
	}
	e.flush(1) // Envoy reopens
	if err := f.backlog(); err != nil || f.dropped != 0 {
		t.Fatalf("dropped %d bytes under the bound: %v", f.dropped, err)
	}
	e.flush(20) // the new file is past the bound too
	old, err := os.Stat(e.path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.backlog(); err != nil {
		t.Fatal(err)
	}
	if f.dropped != old.Size() {
		t.Fatalf("dropped %d bytes, want the old file's %d", f.dropped, old.Size())
	}
	var got []int
	for range 5 {
		got = append(got, step(t, f)...)
	}
	if len(got) != 20 || got[0] != 21 {
		t.Fatalf("read %v after giving up the old file, want records 21 to 40", got)
	}
}

func TestABusyFileIsRotatedToo(t *testing.T) {
	e := newFakeEnvoy(t)
	f := newFollower(e.path, 2048, e.ask)
	defer f.close()
	var got []int
	for range 200 {
		e.flush(3) // new records at every turn
		got = append(got, step(t, f)...)
	}
	if e.reopen < 5 {
		t.Fatalf("%d rotations of %d records of about 80 bytes past 2 KiB, the reader never idle", e.reopen, e.next)
	}
	if got[len(got)-1] != e.next-1 || len(got) != e.next {
		t.Fatalf("read %d records, want %d", len(got), e.next)
	}
}
