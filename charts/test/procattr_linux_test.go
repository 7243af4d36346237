package charttest

import "syscall"

// dieWithParent: the kernel kills the server processes when the test
// binary dies, even by SIGKILL (a timeout, ^C), so none is left running.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
