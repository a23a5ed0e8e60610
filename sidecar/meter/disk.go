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
func diskUsage(paths []string) (uint64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total uint64
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p != root && errors.Is(err, fs.ErrNotExist) {
					return nil // removed while we walked
				}
				return err
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
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
		if err != nil {
			return 0, fmt.Errorf("measuring disk usage of %s: %w", root, err)
		}
	}
	return total, nil
}
