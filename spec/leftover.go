package spec

import (
	"strconv"
	"strings"

	"github.com/docker/go-units"
)

// Memory that outlives user processes: files in the workspace's tmpfs
// mounts, SysV shared memory, message queues and semaphores, and POSIX
// message queues stay charged to the workspace's cgroup after the processes
// that made them are gone, and the OOM killer cannot free them. Filling the
// workspace's limit with them would leave no memory for the platform's next
// exec, nor for the command that would clean up. So the workspace caps
// each, and their sum, the Budget, stays below its memory limit by a
// Reserve kept for the platform.
//
// Memory held by processes (anonymous memory, memfds, pipe and socket
// buffers, ptys) is not capped here: it dies with its holders, and the OOM
// killer picks user code first (oom_score_adj 1000).

const (
	// leftoverReserveMin is the least the platform keeps: building a waiter
	// (libcontainer's init, a Go program, runs in the workspace cgroup until
	// it execs the reaper) and running a small command in it, measured at
	// about 18 MiB here (docs/security.md), with room to spare.
	leftoverReserveMin = 48 << 20
	// UnlimitedLeftoverBudget is the budget of a workspace without a memory
	// limit: its leftovers are bounded all the same, by this or an eighth of
	// the host's memory (HostMemory), whichever is lower.
	UnlimitedLeftoverBudget = 1 << 30
	// tmpfsInodeCost is what one tmpfs inode (inode, dentry, a long name)
	// costs in kernel memory, charged to the workspace, rounded up from the
	// 1.2 KiB measured here: a tmpfs size does not count empty files.
	tmpfsInodeCost = 2 << 10
	// msgCost is the kernel allocation for the smallest SysV message.
	msgCost = 64
	// semCost is one SysV semaphore (a cache line).
	semCost = 64
	// mqueueMsgOverhead is a POSIX message's header and page rounding.
	mqueueMsgOverhead = 4 << 10
	pageSize          = 4 << 10
	// minTmpfsInodes leaves a small tmpfs (the container's /dev: device
	// nodes, mount points) room for what the runtime puts there.
	minTmpfsInodes = 64
)

// TmpfsCap is the size and inode count of one tmpfs mount.
type TmpfsCap struct {
	Size, Inodes int64
}

// options are the tmpfs mount options that apply the cap.
func (c TmpfsCap) options() []string {
	return []string{"size=" + strconv.FormatInt(c.Size, 10), "nr_inodes=" + strconv.FormatInt(c.Inodes, 10)}
}

// LeftoverCaps are the caps on memory that outlives user processes.
type LeftoverCaps struct {
	// Budget is the most that all of them may hold together; Reserve is
	// what the workspace's limit keeps beyond it for the platform (0
	// without a limit).
	Budget, Reserve int64
	// Tmp and Shm are /tmp and /dev/shm.
	Tmp, Shm TmpfsCap
	// OtherTmpfs is the share, data and inodes, of the bundle's other
	// tmpfs mounts together.
	OtherTmpfs int64
	// SysVShm is the most SysV shared memory, in bytes; ShmSegments the
	// most segments (each costs a tmpfs inode).
	SysVShm, ShmSegments int64
	// IPCShare is the share of each of SysV message queues, SysV
	// semaphores and POSIX message queues.
	IPCShare int64
}

// WorkspaceLeftoverCaps shares a budget out among the kinds of leftover
// memory. workspaceLimit is the workspace's memory limit (0: none),
// hostMemory the host's memory or the lowest limit above the sandbox's
// cgroup (0: unknown).
//
// The budget is the limit minus a reserve of a quarter (at least
// leftoverReserveMin, at most half the limit); without a limit it is
// UnlimitedLeftoverBudget or an eighth of hostMemory. Of it, /tmp gets a
// half, /dev/shm a quarter, SysV shared memory an eighth, and the last
// eighth goes in equal parts to the bundle's other tmpfs mounts, SysV
// message queues, SysV semaphores and POSIX message queues. Each tmpfs
// share pays for its inodes too (tmpfsInodeCost each): seven eighths are
// data.
func WorkspaceLeftoverCaps(workspaceLimit, hostMemory int64) LeftoverCaps {
	var c LeftoverCaps
	if workspaceLimit > 0 {
		c.Reserve = min(max(workspaceLimit/4, leftoverReserveMin), workspaceLimit/2)
		c.Budget = workspaceLimit - c.Reserve
	} else {
		c.Budget = UnlimitedLeftoverBudget
		if hostMemory > 0 {
			c.Budget = min(c.Budget, hostMemory/8)
		}
	}
	b := c.Budget
	c.Tmp = tmpfsCap(b / 2)
	c.Shm = tmpfsCap(b / 4)
	// Seven eighths of the SysV share are data; each segment is also an
	// inode of the kernel's own tmpfs, paid from the last eighth.
	c.SysVShm = max(b/8/8*7/pageSize*pageSize, pageSize)
	c.ShmSegments = min(max(b/8/8/tmpfsInodeCost, 1), 4096)
	c.IPCShare = b / 8 / 4
	c.OtherTmpfs = c.IPCShare
	return c
}

// tmpfsCap splits share into data (seven eighths) and inodes (the rest).
func tmpfsCap(share int64) TmpfsCap {
	return TmpfsCap{Size: max(share/8*7/pageSize*pageSize, pageSize), Inodes: max(share/8/tmpfsInodeCost, minTmpfsInodes)}
}

// Sysctls are the workspace IPC namespace's limits that apply the caps to
// the bundle's IPC sysctls. kernel.shm_rmid_forced=1 removes a segment
// once no process has it attached and its creator is gone. The sizes of
// one object (a message, a queue, a segment up to the SysV share) stay
// the bundle's, or the kernel's defaults; how many objects there may be
// is lowered to what fits the share. A bundle's lower count stays.
func (c LeftoverCaps) Sysctls(bundle map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range bundle {
		out[k] = v
	}
	get := func(key string, def int64) int64 {
		if v, err := strconv.ParseInt(strings.TrimSpace(out[key]), 10, 64); err == nil && v > 0 {
			return v
		}
		return def
	}
	lower := func(key string, n int64) {
		if v, err := strconv.ParseInt(strings.TrimSpace(out[key]), 10, 64); err == nil && v >= 0 && v <= n {
			return
		}
		out[key] = strconv.FormatInt(n, 10)
	}
	out["kernel.shm_rmid_forced"] = "1"
	lower("kernel.shmmax", c.SysVShm)
	lower("kernel.shmall", c.SysVShm/pageSize)
	lower("kernel.shmmni", c.ShmSegments)
	// A queue of msgmnb bytes holds up to msgmnb one-byte messages.
	queueBytes := get("kernel.msgmnb", 16384)
	lower("kernel.msgmni", max(c.IPCShare/(queueBytes*msgCost), 1))
	// A POSIX queue holds msg_max messages of msgsize_max bytes.
	messages, size := get("fs.mqueue.msg_max", 10), get("fs.mqueue.msgsize_max", 8192)
	lower("fs.mqueue.queues_max", max(c.IPCShare/(messages*(size+mqueueMsgOverhead)), 1))
	out["kernel.sem"] = c.semLimits(out["kernel.sem"])
	return out
}

// semLimits is kernel.sem ("SEMMSL SEMMNS SEMOPM SEMMNI") within the caps,
// keeping a bundle's lower fields.
func (c LeftoverCaps) semLimits(bundle string) string {
	sems := max(c.IPCShare/semCost, 1)
	want := []int64{min(250, sems), sems, 32, min(max(sems/250, 1), 128)}
	if f := strings.Fields(bundle); len(f) == 4 {
		for i, s := range f {
			if v, err := strconv.ParseInt(s, 10, 64); err == nil && v >= 0 && v < want[i] {
				want[i] = v
			}
		}
	}
	s := make([]string, len(want))
	for i, v := range want {
		s[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(s, " ")
}

// capTmpfs replaces the size and nr_inodes options of a tmpfs mount with
// the cap, keeping a lower size the bundle set (a percentage of host
// memory, or anything unparsable, gives way to the cap).
func capTmpfs(opts []string, c TmpfsCap) []string {
	var out []string
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "size":
			if n, err := units.RAMInBytes(v); err == nil && n > 0 && n < c.Size {
				c.Size = n
			}
			continue
		case "nr_inodes":
			if n, err := units.RAMInBytes(v); err == nil && n > 0 && n < c.Inodes {
				c.Inodes = n
			}
			continue
		}
		out = append(out, o)
	}
	return append(out, c.options()...)
}
