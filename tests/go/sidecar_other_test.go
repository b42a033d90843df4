//go:build !linux

package e2e

import "os/exec"

func setChildAttrs(cmd *exec.Cmd) {}
