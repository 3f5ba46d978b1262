package spec

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// leftoverTotal is the most memory the caps let user code leave behind, at
// the kernel's cost per object: tmpfs data and inodes, SysV shm data and
// segments, message queues full of one-byte messages, semaphores, POSIX
// queues full of their largest messages.
func leftoverTotal(t *testing.T, c LeftoverCaps, otherTmpfs int64, sysctl map[string]string) int64 {
	t.Helper()
	num := func(k string) int64 {
		n, err := strconv.ParseInt(sysctl[k], 10, 64)
		if err != nil {
			t.Fatalf("sysctl %s = %q", k, sysctl[k])
		}
		return n
	}
	tmpfs := func(tc TmpfsCap) int64 { return tc.Size + tc.Inodes*tmpfsInodeCost }
	total := tmpfs(c.Tmp) + tmpfs(c.Shm)
	for i := int64(0); i < otherTmpfs; i++ {
		total += tmpfs(tmpfsCap(c.OtherTmpfs / otherTmpfs))
	}
	total += min(num("kernel.shmall")*pageSize, num("kernel.shmmax")*num("kernel.shmmni")) + num("kernel.shmmni")*tmpfsInodeCost
	total += num("kernel.msgmni") * num("kernel.msgmnb") * msgCost
	sem := strings.Fields(sysctl["kernel.sem"])
	semmns, _ := strconv.ParseInt(sem[1], 10, 64)
	total += semmns * semCost
	total += num("fs.mqueue.queues_max") * num("fs.mqueue.msg_max") * (num("fs.mqueue.msgsize_max") + mqueueMsgOverhead)
	return total
}

// TestWorkspaceLeftoverCaps: whatever the limit, everything that outlives user processes fits
// the budget, and the budget leaves the reserve below the workspace's limit.
func TestWorkspaceLeftoverCaps(t *testing.T) {
	defaults := map[string]string{"kernel.msgmnb": "16384", "fs.mqueue.msg_max": "10", "fs.mqueue.msgsize_max": "8192"}
	for _, c := range []struct {
		limit, host     int64
		budget, reserve int64
	}{
		{limit: 192 << 20, budget: 144 << 20, reserve: 48 << 20},
		{limit: 256 << 20, budget: 192 << 20, reserve: 64 << 20},
		{limit: 64 << 20, budget: 32 << 20, reserve: 32 << 20},
		{limit: 8 << 30, budget: 6 << 30, reserve: 2 << 30},
		{limit: 0, host: 24 << 30, budget: UnlimitedLeftoverBudget},
		{limit: 0, host: 2 << 30, budget: 256 << 20},
		{limit: 0, budget: UnlimitedLeftoverBudget},
	} {
		caps := WorkspaceLeftoverCaps(c.limit, c.host)
		if caps.Budget != c.budget || caps.Reserve != c.reserve {
			t.Errorf("limit %d host %d: budget %d reserve %d, want %d and %d", c.limit, c.host, caps.Budget, caps.Reserve, c.budget, c.reserve)
		}
		if c.limit > 0 && caps.Budget+caps.Reserve != c.limit {
			t.Errorf("limit %d: budget and reserve do not add up", c.limit)
		}
		for _, others := range []int64{1, 3} {
			for _, bundle := range []map[string]string{nil, defaults} {
				sysctl := caps.Sysctls(bundle)
				if sysctl["kernel.msgmnb"] == "" {
					sysctl = caps.Sysctls(defaults)
				}
				// A tiny tmpfs keeps minTmpfsInodes for the runtime's own entries.
				slack := others * minTmpfsInodes * tmpfsInodeCost
				if total := leftoverTotal(t, caps, others, sysctl); total > caps.Budget+slack {
					t.Errorf("limit %d, %d other tmpfs: leftovers may reach %d MiB, over the budget of %d MiB (%v)",
						c.limit, others, total>>20, caps.Budget>>20, sysctl)
				}
			}
		}
	}
}

// TestLeftoverSysctls: shm_rmid_forced is always on; the bundle's sizes of one object stay
// while the counts shrink to fit; a bundle's lower count stays; other keys pass.
func TestLeftoverSysctls(t *testing.T) {
	caps := WorkspaceLeftoverCaps(256<<20, 0)
	got := caps.Sysctls(map[string]string{
		"kernel.shm_rmid_forced": "0", "kernel.shmmax": "18446744073692774399", "kernel.shmmni": "8",
		"kernel.msgmnb": "65536", "fs.mqueue.msg_max": "100", "fs.mqueue.msgsize_max": "1024",
		"kernel.sem": "32000 1024000000 500 4",
	})
	want := map[string]string{
		"kernel.shm_rmid_forced": "1",
		"kernel.shmmax":          strconv.FormatInt(caps.SysVShm, 10),
		"kernel.shmall":          strconv.FormatInt(caps.SysVShm/pageSize, 10),
		"kernel.shmmni":          "8",
		"kernel.msgmnb":          "65536",
		"kernel.msgmni":          strconv.FormatInt(max(caps.IPCShare/(65536*msgCost), 1), 10),
		"fs.mqueue.msg_max":      "100",
		"fs.mqueue.msgsize_max":  "1024",
		"fs.mqueue.queues_max":   strconv.FormatInt(caps.IPCShare/(100*(1024+mqueueMsgOverhead)), 10),
		"kernel.sem":             "250 " + strconv.FormatInt(caps.IPCShare/semCost, 10) + " 32 4",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("sysctls %v, want %v", got, want)
	}
}

func TestCapTmpfs(t *testing.T) {
	c := TmpfsCap{Size: 64 << 20, Inodes: 1000}
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"nosuid", "mode=755"}, []string{"nosuid", "mode=755", "size=67108864", "nr_inodes=1000"}},
		{[]string{"size=65536k", "nr_inodes=10"}, []string{"size=67108864", "nr_inodes=10"}},
		{[]string{"size=1m", "nr_inodes=1m"}, []string{"size=1048576", "nr_inodes=1000"}},
		{[]string{"size=50%", "nr_inodes=0"}, []string{"size=67108864", "nr_inodes=1000"}},
		{[]string{"size=0"}, []string{"size=67108864", "nr_inodes=1000"}},
	} {
		if got := capTmpfs(tc.in, c); !slices.Equal(got, tc.want) {
			t.Errorf("capTmpfs(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
