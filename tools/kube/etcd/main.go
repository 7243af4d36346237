// Command etcd is etcd's server, built from its server module: the module
// of etcd's own main package (go.etcd.io/etcd/v3) has replace directives,
// so `go install` refuses it. The chart tests (charts/test) run it under a
// real kube-apiserver; `make tools` builds it into .bin/.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
