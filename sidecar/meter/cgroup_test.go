package meter

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPodCgroup(t *testing.T) {
	for name, tc := range map[string]struct{ path, want string }{
		"cgroupfs driver": {"/kubepods/burstable/pod6f0c2b1e-9a1d-4c55-8f0e-0a1b2c3d4e5f/0123abcd", "/kubepods/burstable/pod6f0c2b1e-9a1d-4c55-8f0e-0a1b2c3d4e5f"},
		"guaranteed pod":  {"/kubepods/pod6f0c2b1e-9a1d-4c55-8f0e-0a1b2c3d4e5f/0123abcd", "/kubepods/pod6f0c2b1e-9a1d-4c55-8f0e-0a1b2c3d4e5f"},
		"systemd driver": {
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f0c2b1e_9a1d_4c55_8f0e_0a1b2c3d4e5f.slice/cri-containerd-0123.scope",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f0c2b1e_9a1d_4c55_8f0e_0a1b2c3d4e5f.slice",
		},
		"cgroup namespace root": {"/", ""},
		"plain host":            {"/user.slice/user-1000.slice/session-2.scope", ""},
		"a pod-like word":       {"/podman/abc", ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := podCgroup(tc.path); got != tc.want {
				t.Fatalf("podCgroup(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may choose.
	line := "4242 (my (odd) cmd) S 17 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 123456 10000000 2048 18446744073709551615"
	st, err := parseProcStat(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{key: procKey{pid: 4242, startTime: 123456}, ppid: 17, ticks: 300, rss: 2048}
	if st != want {
		t.Fatalf("parsed %+v, want %+v", st, want)
	}
	if _, err := parseProcStat(1, []byte("1 (x) S 0 1")); err == nil {
		t.Fatal("a truncated stat parsed")
	}
}

// fakeHost writes a mountinfo and the cgroup files it points at under a
// temporary folder, standing in for /proc/self and /sys/fs/cgroup.
func fakeHost(t *testing.T, mountinfo string, files ...string) (self, root string) {
	t.Helper()
	root = t.TempDir()
	self = filepath.Join(root, "self")
	if err := os.MkdirAll(self, 0o755); err != nil {
		t.Fatal(err)
	}
	mountinfo = strings.ReplaceAll(mountinfo, "ROOT", root)
	if err := os.WriteFile(filepath.Join(self, "mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		content := "1\n"
		if filepath.Base(p) == "cpu.stat" {
			content = "usage_usec 1\nuser_usec 1\nsystem_usec 0\n"
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return self, root
}

const pod = "/kubepods/burstable/pod6f0c2b1e-9a1d-4c55-8f0e-0a1b2c3d4e5f"

func TestAutoFindsThePodCgroup(t *testing.T) {
	for name, tc := range map[string]struct {
		mountinfo, cgroup string
		files             []string
		cpu, mem          string
		err               error
	}{
		"v2 with the host's hierarchy mounted": {
			mountinfo: "41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			cgroup:    "0::" + pod + "/ctr\n",
			files:     []string{"unified" + pod + "/cpu.stat", "unified" + pod + "/memory.current"},
			cpu:       "unified" + pod + "/cpu.stat", mem: "unified" + pod + "/memory.current",
		},
		"v1 with the host's hierarchies mounted": {
			mountinfo: "33 31 0:30 / ROOT/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n35 31 0:32 / ROOT/memory rw - cgroup cgroup rw,memory\n",
			cgroup:    "4:memory:" + pod + "/ctr\n2:cpu,cpuacct:" + pod + "/ctr\n",
			files:     []string{"cpu,cpuacct" + pod + "/cpuacct.usage", "memory" + pod + "/memory.usage_in_bytes"},
			cpu:       "cpu,cpuacct" + pod + "/cpuacct.usage", mem: "memory" + pod + "/memory.usage_in_bytes",
		},
		"hybrid: v2 without the memory controller": {
			mountinfo: "35 31 0:32 / ROOT/memory rw - cgroup cgroup rw,memory\n41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			cgroup:    "4:memory:" + pod + "/ctr\n0::" + pod + "/ctr\n",
			files:     []string{"unified" + pod + "/cpu.stat", "memory" + pod + "/memory.usage_in_bytes"},
			cpu:       "unified" + pod + "/cpu.stat", mem: "memory" + pod + "/memory.usage_in_bytes",
		},
		"v1 inside a container: only the container's cgroup is mounted": {
			mountinfo: "33 31 0:30 " + pod + "/ctr ROOT/cpuacct ro - cgroup cgroup rw,cpuacct\n35 31 0:32 " + pod + "/ctr ROOT/memory ro - cgroup cgroup rw,memory\n",
			cgroup:    "4:memory:" + pod + "/ctr\n2:cpuacct:" + pod + "/ctr\n",
			files:     []string{"cpuacct/cpuacct.usage", "memory/memory.usage_in_bytes"},
			err:       ErrNoSource,
		},
		"v2 with a cgroup namespace": {
			mountinfo: "41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			cgroup:    "0::/\n",
			files:     []string{"unified/cpu.stat", "unified/memory.current"},
			err:       ErrNoSource,
		},
	} {
		t.Run(name, func(t *testing.T) {
			self, root := fakeHost(t, tc.mountinfo, tc.files...)
			if err := os.WriteFile(filepath.Join(self, "cgroup"), []byte(tc.cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			// An empty /proc: PID 1 is not a pod's pause process.
			m, err := New(Config{Source: SourceAuto, Proc: t.TempDir(), Self: self})
			if !errors.Is(err, tc.err) {
				t.Fatalf("New: %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			src := m.src.(*cgroupSource)
			if src.cpuFile != filepath.Join(root, tc.cpu) || src.memFile != filepath.Join(root, tc.mem) {
				t.Fatalf("reads cpu %s and memory %s, want %s and %s", src.cpuFile, src.memFile, tc.cpu, tc.mem)
			}
		})
	}
}

func TestAutoUsesEveryProcessInASharedPodPIDNamespace(t *testing.T) {
	self, _ := fakeHost(t, "41 31 0:38 / /x rw - cgroup2 cgroup2 rw\n")
	if err := os.WriteFile(filepath.Join(self, "cgroup"), []byte("0::/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"1/comm": "pause\n",
		"1/stat": "1 (pause) S 0 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 10 1000 100",
		"7/stat": "7 (python3) S 0 7 7 0 -1 0 0 0 0 0 40 10 0 0 20 0 1 0 20 1000 5000",
	}
	for f, content := range files {
		_ = os.MkdirAll(filepath.Join(proc, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(proc, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Config{Proc: proc, Self: self})
	if err != nil {
		t.Fatal(err)
	}
	src, ok := m.src.(*procSource)
	if !ok || src.root != 0 {
		t.Fatalf("auto picked %s, want every process", m.Source())
	}
	if want := uint64(5100) * pageSize; m.prev.Memory != want {
		t.Fatalf("memory = %d, want the RSS sum %d", m.prev.Memory, want)
	}
}
