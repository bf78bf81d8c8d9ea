// Command etcd runs an etcd server (go.etcd.io/etcd/server/v3/etcdmain) so
// that scripts/bench-store.sh can measure orch's store against etcd on the
// same machine in the same run. It is built only for benchmarking and lives
// in its own module, so orch itself never depends on etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
