package logship

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// follower reads the complete records of the file Envoy appends to, from
// where the last acknowledged batch ended, and rotates it: past a size it
// renames the file to path.1 and has Envoy reopen its logs, reads path.1
// to its end once Envoy writes to the new file, then deletes it. Where it
// is (inode and offset) is kept in path.pos, so a restart neither repeats
// nor skips what was acknowledged.
type follower struct {
	path string
	// rotateBytes is the size past which the file is rotated.
	rotateBytes int64
	// reopen asks Envoy to reopen its access logs.
	reopen func() error

	f      *os.File
	br     *bufio.Reader // reused by every read of f
	ino    uint64
	offset int64
	// rotating: f is path.1 and Envoy has been asked to reopen.
	rotating bool
	// drained: while rotating, Envoy was seen writing to the new file;
	// path.1 is done once read to its end after that.
	drained bool
	// dropped counts the bytes of unshipped records given up (a backlog
	// past its bound, a record past maxRecord).
	dropped int64
}

func newFollower(path string, rotateBytes int64, reopen func() error) *follower {
	return &follower{path: path, rotateBytes: rotateBytes, reopen: reopen, br: bufio.NewReaderSize(nil, 64<<10)}
}

func (r *follower) old() string { return r.path + ".1" }

// open finds the file to read after a start: the one path.pos names, in
// path or path.1, at its offset; else path.1 then path from their start.
func (r *follower) open() error {
	ino, offset := r.loadPos()
	for _, c := range []struct {
		path     string
		rotating bool
	}{{r.old(), true}, {r.path, false}} {
		f, err := os.Open(c.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("opening %s: %w", c.path, err)
		}
		i, size, err := inode(f)
		if err != nil {
			_ = f.Close()
			return err
		}
		r.f, r.ino, r.offset, r.rotating = f, i, 0, c.rotating
		if i == ino && offset <= size {
			// (Past the end, it is another file that got the inode.)
			r.offset = offset
		}
		return nil
	}
	return nil
}

// records returns the complete records from the offset (the lines up to
// an empty one, without it), at most max bytes (a longer record alone),
// and the offset after them. None when there is nothing new.
func (r *follower) records(max int) ([][]byte, int64, error) {
	if r.f == nil {
		if err := r.open(); err != nil || r.f == nil {
			return nil, r.offset, err
		}
	}
	if _, err := r.f.Seek(r.offset, io.SeekStart); err != nil {
		return nil, 0, fmt.Errorf("seeking %s: %w", r.f.Name(), err)
	}
	br := r.br
	br.Reset(io.LimitReader(r.f, int64(max)+maxRecord))
	var out [][]byte
	var rec []byte // the record being read
	end := r.offset
	for end-r.offset < int64(max) {
		l, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: read it whole.
			rest, err2 := br.ReadBytes('\n')
			l, err = append(bytes.Clone(l), rest...), err2
		}
		if err != nil {
			if read := len(rec) + len(l); len(out) == 0 && read >= max+maxRecord {
				// No end in sight: skip what was read. The rest of
				// the record fails to parse and is skipped with it.
				r.dropped += int64(read)
				return nil, end + int64(read), nil
			}
			break // an incomplete record waits for Envoy to end it
		}
		if len(l) > 1 {
			rec = append(rec, l...)
			continue
		}
		end += int64(len(rec) + len(l))
		if len(rec) > 0 {
			out = append(out, rec)
		}
		rec = nil
	}
	return out, end, nil
}

// maxRecord bounds the record read past a batch's size.
const maxRecord = 1 << 20

// advance records that everything before offset was shipped.
func (r *follower) advance(offset int64) error {
	r.offset = offset
	return r.savePos()
}

// rotate starts a rotation once the file is past its size, busy or not:
// path is renamed to path.1, which is read on, and Envoy is asked to
// reopen its logs.
func (r *follower) rotate() error {
	if r.f == nil || r.rotating {
		return nil
	}
	info, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("reading the size of %s: %w", r.path, err)
	}
	if info.Size() < r.rotateBytes {
		return nil
	}
	if err := os.Rename(r.path, r.old()); err != nil {
		return fmt.Errorf("rotating %s: %w", r.path, err)
	}
	r.rotating = true
	return r.reopen()
}

// idle runs when there was nothing new to read: it finishes a rotation
// once Envoy writes to the new file, and asks Envoy again until it does.
func (r *follower) idle() error {
	if r.f == nil || !r.rotating {
		return nil
	}
	if _, err := os.Stat(r.path); errors.Is(err, fs.ErrNotExist) {
		// Envoy has not reopened yet (or missed the request).
		return r.reopen()
	}
	if !r.drained {
		// Envoy writes to the new file, and wrote to the old one last
		// before it opened it: one more read gets the end.
		r.drained = true
		return nil
	}
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", r.old(), err)
	}
	r.f, r.rotating, r.drained = nil, false, false
	if err := os.Remove(r.old()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", r.old(), err)
	}
	return r.open()
}

// backlog bounds the unshipped bytes while serve cannot be reached: past
// twice the rotation size, the old file is given up (its rest counted
// in dropped) and reading goes on in the new one.
func (r *follower) backlog() error {
	if r.f == nil || !r.rotating {
		return nil
	}
	info, err := os.Stat(r.path)
	if err != nil {
		return nil // no new file yet
	}
	old, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("reading the size of %s: %w", r.old(), err)
	}
	unshipped := old.Size() - r.offset + info.Size()
	if unshipped <= 2*r.rotateBytes {
		return nil
	}
	r.dropped += old.Size() - r.offset
	r.offset = old.Size()
	return r.idle()
}

func (r *follower) close() {
	if r.f != nil {
		_ = r.f.Close()
	}
}

func (r *follower) posPath() string { return r.path + ".pos" }

func (r *follower) loadPos() (ino uint64, offset int64) {
	b, err := os.ReadFile(r.posPath())
	if err != nil {
		return 0, 0
	}
	i, o, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok {
		return 0, 0
	}
	ino, err1 := strconv.ParseUint(i, 10, 64)
	offset, err2 := strconv.ParseInt(o, 10, 64)
	if err1 != nil || err2 != nil || offset < 0 {
		return 0, 0
	}
	return ino, offset
}

func (r *follower) savePos() error {
	tmp := r.posPath() + ".new"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", r.ino, r.offset), 0o644); err != nil {
		return fmt.Errorf("saving the position: %w", err)
	}
	if err := os.Rename(tmp, r.posPath()); err != nil {
		return fmt.Errorf("saving the position: %w", err)
	}
	return nil
}

// inode returns f's inode number and size.
func inode(f *os.File) (ino uint64, size int64, err error) {
	info, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("no inode for %s", f.Name())
	}
	return st.Ino, info.Size(), nil
}
