//go:build linux

package e2e

import (
	"os/exec"
	"syscall"
)

// setChildAttrs makes the kernel kill the sidecar if the test binary dies (e.g. `go test`
// timeout), so no orphaned sidecar keeps running.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
