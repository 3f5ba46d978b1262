package spec

import (
	"fmt"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// UpdateResources applies the fields of r that containerd's Update carries
// (as `runc update` does) to res. Fields r leaves nil keep their value.
func UpdateResources(res *configs.Resources, r *specs.LinuxResources) error {
	if r == nil {
		return fmt.Errorf("no resources given")
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			res.Memory = *m.Limit
		}
		if m.Reservation != nil {
			res.MemoryReservation = *m.Reservation
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
		if m.Limit != nil && m.Swap != nil && *m.Swap > 0 && *m.Limit > 0 && *m.Swap < *m.Limit {
			return fmt.Errorf("memory+swap limit %d is below the memory limit %d", *m.Swap, *m.Limit)
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			res.CpuShares = *c.Shares
		}
		if c.Quota != nil {
			res.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			res.CpuPeriod = *c.Period
		}
		if c.RealtimeRuntime != nil {
			res.CpuRtRuntime = *c.RealtimeRuntime
		}
		if c.RealtimePeriod != nil {
			res.CpuRtPeriod = *c.RealtimePeriod
		}
		if c.Cpus != "" {
			res.CpusetCpus = c.Cpus
		}
		if c.Mems != "" {
			res.CpusetMems = c.Mems
		}
	}
	if p := r.Pids; p != nil {
		if p.Limit != nil {
			l := *p.Limit
			res.PidsLimit = &l
		}
	}
	if b := r.BlockIO; b != nil && b.Weight != nil {
		res.BlkioWeight = *b.Weight
	}
	if len(r.Unified) > 0 {
		if res.Unified == nil {
			res.Unified = map[string]string{}
		}
		for k, v := range r.Unified {
			res.Unified[k] = v
		}
	}
	return nil
}
