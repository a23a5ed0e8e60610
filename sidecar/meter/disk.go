package meter

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// diskUsage is the space the files under paths take on disk, as du counts it:
// allocated blocks, each hard-linked file once, symbolic links not followed.
// A path or folder that cannot be read (missing, or a model's 0700 folder)
// is left out and returned in skipped, so the rest is still measured.
func diskUsage(paths []string) (total uint64, skipped []error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	for _, root := range paths {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p != root && errors.Is(err, fs.ErrNotExist) {
					return nil // removed while we walked
				}
				skipped = append(skipped, fmt.Errorf("measuring disk usage of %s: %w", p, err))
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				skipped = append(skipped, fmt.Errorf("measuring disk usage of %s: %w", p, err))
				return nil
			}
			st, ok := info.Sys().(*syscall.Stat_t)
			if !ok {
				total += uint64(info.Size())
				return nil
			}
			key := inode{uint64(st.Dev), st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
			total += uint64(st.Blocks) * 512 // st_blocks is in 512-byte units whatever the block size
			return nil
		})
	}
	return total, skipped
}
