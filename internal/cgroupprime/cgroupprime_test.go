package cgroupprime

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/cgroups"
)

// On this host the directory is the one the cgroups library finds.
func TestOwnCgroupDirMatchesTheLibrary(t *testing.T) {
	got, err := ownCgroupDir()
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if cgroups.IsCgroup2UnifiedMode() {
		own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		want = filepath.Join("/sys/fs/cgroup", own[""])
	} else if want, err = cgroups.GetOwnCgroupPath("pids"); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("ownCgroupDir = %q; the cgroups library says %q", got, want)
	}
}

func TestCgroupDir(t *testing.T) {
	const v1 = "12:pids:/kubepods/pod1\n11:cpu,cpuacct:/kubepods/pod1\n0::/\n"
	const v1Mounts = `25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw
30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/pids rw shared:9 - cgroup cgroup rw,pids
`
	for name, c := range map[string]struct{ membership, mounts, want string }{
		"v1 pids":            {v1, v1Mounts, "/sys/fs/cgroup/pids/kubepods/pod1"},
		"v2":                 {"0::/system.slice/containerd.service\n", "40 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup/system.slice/containerd.service"},
		"root bind-mounted":  {"5:pids:/outer/inner\n", "32 25 0:28 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", "/sys/fs/cgroup/pids/inner"},
		"outside the mount":  {"5:pids:/other\n", "32 25 0:28 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", ""},
		"prefix is no match": {"5:pids:/outerx\n", "32 25 0:28 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", ""},
		"pids not mounted":   {"5:pids:/a\n", "31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := cgroupDir(c.membership, c.mounts)
			if c.want == "" {
				if err == nil {
					t.Fatalf("cgroupDir = %q; want an error", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("cgroupDir = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// The move is into the cgroup the process is in: its placement stays.
func TestPrimeKeepsPlacement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("moving a process between cgroups needs root")
	}
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if err := prime(os.Getpid()); err != nil {
		t.Fatalf("prime: %v", err)
	}
	after, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Fatalf("cgroups changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A pid the cgroup does not hold is never written: the write would move it.
func TestPrimeRefusesAPidOutsideTheCgroup(t *testing.T) {
	if err := prime(1 << 30); err == nil {
		t.Fatal("prime of a pid no cgroup holds succeeded")
	}
	procs := filepath.Join(t.TempDir(), "cgroup.procs")
	if err := os.WriteFile(procs, []byte("1\n22\n333\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !holds(procs, 22) || holds(procs, 2) || holds(procs, 33) {
		t.Fatal("holds matches pids by prefix or misses a listed one")
	}
}

func TestItoa(t *testing.T) {
	for _, n := range []int{1, 9, 10, 4194303, 1 << 40} {
		if got := itoa(n); got != strconv.Itoa(n) {
			t.Fatalf("itoa(%d) = %q", n, got)
		}
	}
}
