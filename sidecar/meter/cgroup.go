package meter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cgroupSource reads the CPU and memory usage of one cgroup. The two may come
// from different hierarchies (v2, or the v1 cpuacct and memory controllers)
// because hybrid hosts mount both.
type cgroupSource struct {
	cpuFile string // cpu.stat (v2) or cpuacct.usage (v1)
	memFile string // memory.current (v2) or memory.usage_in_bytes (v1)
}

func (s *cgroupSource) String() string {
	return fmt.Sprintf("cgroup (cpu from %s, memory from %s)", s.cpuFile, s.memFile)
}

func (s *cgroupSource) Read() (Usage, error) {
	cpu, err := readCgroupCPU(s.cpuFile)
	if err != nil {
		return Usage{}, err
	}
	mem, err := readUint(s.memFile)
	if err != nil {
		return Usage{}, err
	}
	return Usage{CPU: cpu, Memory: mem}, nil
}

// readCgroupCPU reads the cumulative CPU time of a cgroup: usage_usec of
// cgroup v2's cpu.stat, or v1's cpuacct.usage in nanoseconds.
func readCgroupCPU(file string) (time.Duration, error) {
	if filepath.Base(file) != "cpu.stat" {
		ns, err := readUint(file)
		return time.Duration(ns), err
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, fmt.Errorf("reading cgroup cpu: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			usec, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing usage_usec in %s: %w", file, err)
			}
			return time.Duration(usec) * time.Microsecond, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s: %w", file, err)
	}
	return 0, fmt.Errorf("no usage_usec in %s", file)
}

func readUint(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("reading cgroup file: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", file, err)
	}
	return v, nil
}

// cgroupMount is one cgroup filesystem in /proc/self/mountinfo: the cgroup
// path at its root and where that root is mounted.
type cgroupMount struct {
	v2          bool
	controllers []string // v1 only
	root        string
	point       string
}

// parseMountinfo returns the cgroup mounts of a mountinfo file (proc(5)).
func parseMountinfo(r io.Reader) ([]cgroupMount, error) {
	var mounts []cgroupMount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 36 35 98:0 /root /mnt/point rw,noatime master:1 - cgroup cgroup rw,cpuacct
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		m := cgroupMount{root: unescapeMount(fields[3]), point: unescapeMount(fields[4])}
		switch tail[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			m.controllers = strings.Split(tail[2], ",")
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMount undoes mountinfo's octal escapes of spaces and tabs.
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// procCgroups is a process's membership from /proc/PID/cgroup: the path in
// the v2 hierarchy and in each v1 controller's hierarchy.
type procCgroups struct {
	v2 string            // "" when the process is in no v2 hierarchy
	v1 map[string]string // controller name to path
}

func parseProcCgroup(r io.Reader) (procCgroups, error) {
	pc := procCgroups{v1: map[string]string{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			pc.v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			pc.v1[c] = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return procCgroups{}, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	return pc, nil
}

// errNotVisible says a cgroup exists in the process's view of the hierarchy
// but no mount of this container shows it.
var errNotVisible = errors.New("cgroup not visible in any cgroup mount")

// findCgroupFiles picks the files that hold a cgroup's CPU and memory usage,
// preferring cgroup v2 where it has the file (a v2 hierarchy without the
// memory controller has no memory.current) and else the v1 controller.
// paths gives the cgroup's path per hierarchy; an empty path skips it.
func findCgroupFiles(mounts []cgroupMount, paths procCgroups) (*cgroupSource, error) {
	cpu := firstExisting(
		mountFile(mounts, "", paths.v2, "cpu.stat"),
		mountFile(mounts, "cpuacct", paths.v1["cpuacct"], "cpuacct.usage"),
	)
	mem := firstExisting(
		mountFile(mounts, "", paths.v2, "memory.current"),
		mountFile(mounts, "memory", paths.v1["memory"], "memory.usage_in_bytes"),
	)
	switch {
	case cpu == "" && mem == "":
		return nil, errNotVisible
	case cpu == "":
		return nil, fmt.Errorf("no cpu.stat or cpuacct.usage for the cgroup: %w", errNotVisible)
	case mem == "":
		return nil, fmt.Errorf("no memory.current or memory.usage_in_bytes for the cgroup: %w", errNotVisible)
	}
	return &cgroupSource{cpuFile: cpu, memFile: mem}, nil
}

// mountFile is where file of the cgroup at cgPath shows in the mount of the
// v2 hierarchy (controller "") or of a v1 controller, or "" when no mount
// shows that cgroup.
func mountFile(mounts []cgroupMount, controller, cgPath, file string) string {
	if cgPath == "" {
		return ""
	}
	for _, m := range mounts {
		if (controller == "") != m.v2 || (controller != "" && !slices.Contains(m.controllers, controller)) {
			continue
		}
		rel, ok := under(m.root, cgPath)
		if !ok {
			continue
		}
		return filepath.Join(m.point, rel, file)
	}
	return ""
}

// under returns p relative to root when p is root or below it.
func under(root, p string) (string, bool) {
	root, p = path.Clean(root), path.Clean(p)
	if root == "/" {
		return p, true
	}
	if p == root {
		return "/", true
	}
	rel, ok := strings.CutPrefix(p, root+"/")
	return "/" + rel, ok
}

func firstExisting(files ...string) string {
	for _, f := range files {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}

// podSegment matches the cgroup of a Kubernetes pod under the cgroupfs
// driver (pod<uid>) and the systemd driver (kubepods-burstable-pod<uid>.slice).
var podSegment = regexp.MustCompile(`^(pod[0-9a-fA-F][0-9a-fA-F_-]{7,}|kubepods(-[a-z]+)?-pod[0-9a-fA-F_]+\.slice)$`)

// podCgroup returns the ancestor of a container's cgroup path that is its
// pod's cgroup, or "" when the path shows no pod (a cgroup namespace hides
// it, or this is not Kubernetes).
func podCgroup(p string) string {
	segs := strings.Split(path.Clean(p), "/")
	for i := len(segs) - 1; i > 0; i-- {
		if podSegment.MatchString(segs[i]) {
			return strings.Join(segs[:i+1], "/")
		}
	}
	return ""
}
