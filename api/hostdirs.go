package api

import "path/filepath"

// ControlPlaneDirName is the directory in a sandbox's HostDir that holds
// the control plane's API socket; it is bind-mounted at
// ControlPlaneSocketDir into the control plane, and nowhere else.
const ControlPlaneDirName = "control-plane"

// ControlPlaneHostDir is that directory on the host.
func ControlPlaneHostDir(namespace, id string) string {
	return filepath.Join(HostDir(namespace, id), ControlPlaneDirName)
}
