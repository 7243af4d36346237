//go:build !linux

package charttest

import "syscall"

// dieWithParent: only Linux has a parent-death signal; elsewhere TestMain
// stops the servers, unless the test binary is killed.
func dieWithParent() *syscall.SysProcAttr { return nil }
