package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// Info is the sandbox as the API reports it: secure execution, and every
// protection with its parameters, read from the workspace's config as
// built (or as it will be built, before it is).
func (a *API) Info(ctx context.Context, caller sandboxv1.Caller) (*sandboxv1.InfoResponse, error) {
	sb := a.sb
	resp := &sandboxv1.InfoResponse{SandboxId: sb.ID, Namespace: sb.Namespace, Caller: caller, EnvKeys: a.envKeys()}
	ws := sb.currentWorkspace()
	built := isReady(ws) && ws.container != nil
	switch {
	case sb.stopped():
		resp.SecureExecutionUnavailable = []string{"the sandbox has stopped"}
	case !isReady(ws):
		if sb.settings.SecureExecDisabled {
			resp.SecureExecutionUnavailable = []string{fmt.Sprintf("disabled for this sandbox by %s=disabled", api.AnnotationSecureExec)}
		} else {
			resp.SecureExecutionUnavailable = []string{"the workspace is not built yet (it is, with its secure containers, after Start)"}
		}
	case ws.err != nil:
		resp.SecureExecutionUnavailable = []string{"workspace unavailable: " + ws.err.Error()}
	default:
		resp.SecureExecutionUnavailable = runnerUnavailable(ws)
	}
	resp.HasSecureExecution = len(resp.SecureExecutionUnavailable) == 0
	var cfg *configs.Config
	settings := sb.workspaceSettings()
	if built {
		c := ws.container.Config()
		cfg = &c
	} else if c, err := spec.Workspace(sb.ID+workspaceSuffix, sb.Bundle, sb.bundleSpec, spec.WorkspaceOptions{
		Settings: settings, CgroupPath: sb.cgroupPaths.User, Reaper: sb.reaperBinary, HostMemory: sb.hostMemory,
	}); err == nil {
		cfg = c
	}
	resp.Protections = a.protections(cfg, settings, ws, built, resp)
	return resp, nil
}

func protection(name string, active bool, description string, params ...string) *sandboxv1.Protection {
	p := &sandboxv1.Protection{Name: name, Active: active, Description: description, Parameters: map[string]string{}}
	for i := 0; i+1 < len(params); i += 2 {
		p.Parameters[params[i]] = params[i+1]
	}
	return p
}

func (a *API) protections(cfg *configs.Config, st spec.Settings, ws *workspace, built bool, info *sandboxv1.InfoResponse) []*sandboxv1.Protection {
	sb := a.sb
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	out := []*sandboxv1.Protection{
		protection("workspace-user", true, "user code (every exec, API exec and secure exec) runs as this user, never root or group 0",
			"uid", itoa(int64(st.UID)), "gid", itoa(int64(st.GID)), "control_plane_uid", itoa(int64(st.ControlUID)),
			"from_annotation", strconv.FormatBool(st.UserFromAnnotation)),
		protection("capabilities", true, "no capabilities: every capability set of user code is empty", "bounding", "none", "effective", "none", "ambient", "none"),
		protection("rlimit-core", true, "hard RLIMIT_CORE 0: no core dump writes user code's memory (or a secret) to disk", "soft", "0", "hard", "0"),
	}
	if cfg == nil {
		return append(out, protection("workspace", false, "the workspace's config could not be built"))
	}
	var pidns bool
	for _, ns := range cfg.Namespaces {
		if ns.Type == configs.NEWPID && ns.Path == "" {
			pidns = true
		}
	}
	out = append(out,
		protection("pid-namespace", pidns, "the workspace has a PID namespace of its own, a sibling of the control plane's: user code cannot see, signal or trace it", "kind", "sibling"),
		protection("no-new-privileges", cfg.NoNewPrivileges, "no_new_privs: setuid binaries and file capabilities grant nothing"))
	if sc := cfg.Seccomp; sc != nil {
		out = append(out, protection("seccomp", true, "containerd's default profile for a process without capabilities, minus syscalls that reach other processes or bypass it (ptrace, process_vm_*, io_uring, bpf, userfaultfd, keyctl...) and TIOCSTI/TIOCLINUX",
			"default_action", seccompAction(sc.DefaultAction), "rules", strconv.Itoa(len(sc.Syscalls)), "architectures", strings.Join(sc.Architectures, ",")))
	} else {
		out = append(out, protection("seccomp", false, "no seccomp profile"))
	}
	if adj := cfg.OomScoreAdj; adj != nil {
		out = append(out, protection("oom-score-adj", true, "the kernel's OOM killer picks user code before the control plane", "oom_score_adj", strconv.Itoa(*adj)))
	}
	res := cfg.Cgroups.Resources
	pids := int64(0)
	if res.PidsLimit != nil {
		pids = *res.PidsLimit
	}
	out = append(out,
		protection("pids-limit", pids > 0, "the workspace's processes are capped, each exec's at a share, the control plane keeps a reserve",
			"workspace", itoa(pids), "per_exec", itoa(spec.ExecPidsLimit(pids))),
		protection("memory-limit", res.Memory > 0, "the workspace's memory is capped below the sandbox's, the control plane keeps a reserve",
			"workspace_bytes", itoa(res.Memory), "from_annotation", strconv.FormatBool(st.MemoryFromAnnotation)))
	leftover := map[string]string{}
	for _, m := range cfg.Mounts {
		if m.Device == "tmpfs" && (m.Destination == "/tmp" || m.Destination == "/dev/shm") {
			for _, o := range strings.Split(m.Data, ",") {
				if v, ok := strings.CutPrefix(o, "size="); ok {
					leftover[strings.TrimPrefix(filepath.Base(m.Destination), "/")+"_size_bytes"] = v
				}
			}
		}
	}
	lp := protection("leftover-caps", len(leftover) > 0, "what user code can leave behind in memory (tmpfs, SysV and POSIX IPC) is capped within its memory limit")
	for k, v := range leftover {
		lp.Parameters[k] = v
	}
	out = append(out, lp)
	out = append(out, protection("landlock", false, "not applied: the workspace's own mount namespace, user and mounts bound what its files reach"))
	// Once-guarded: the workspace's waiters asked for it already.
	pty := built && ws.platformPtmx(context.Background(), StateRoot(sb.Bundle), sb.ID+workspaceSuffix) != nil
	out = append(out, protection("platform-pty", pty, "terminal execs get ptys from a devpts instance of the platform's, which user code cannot open or type into"))
	p := sb.protections
	ports := make([]string, 0, len(p.ReservedPorts))
	for _, port := range p.ReservedPorts {
		ports = append(ports, strconv.Itoa(int(port)))
	}
	out = append(out, protection("reserved-ports", len(p.ReservedPorts) > 0 && p.Network.Enforced,
		"the control plane's TCP ports are held by the shim from before it runs; user code can never bind, take or intercept them",
		"ports", strings.Join(ports, ","), "dual_stack", strconv.FormatBool(p.DualStack),
		"user_connect", strconv.FormatBool(st.UserConnect), "enforced", strconv.FormatBool(p.Network.Enforced), "error", p.Network.Error))
	se := protection("secure-exec", info.HasSecureExecution, "execSecure runs each call in a container of its own built by the shim; it fails closed where unavailable",
		"pool_size", strconv.Itoa(st.SecureExecPoolSize), "disabled_by_annotation", strconv.FormatBool(st.SecureExecDisabled))
	if !info.HasSecureExecution {
		se.Parameters["unavailable"] = strings.Join(info.SecureExecutionUnavailable, "; ")
	}
	out = append(out, se)
	out = append(out, protection("sandbox-api", true, "the API is served on unix path sockets only: root on the host, the control plane's user inside it; never in the workspace or a secure container",
		"host_socket", api.HostSocketPath(sb.Namespace, sb.ID), "control_plane_socket", api.ControlPlaneSocket))
	return out
}

func seccompAction(a configs.Action) string {
	switch a {
	case configs.Errno:
		return "errno"
	case configs.Allow:
		return "allow"
	case configs.Kill, configs.KillThread:
		return "kill"
	case configs.KillProcess:
		return "kill-process"
	case configs.Trap:
		return "trap"
	case configs.Log:
		return "log"
	}
	return strconv.Itoa(int(a))
}
