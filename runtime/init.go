package runtime

// #cgo CFLAGS: -Wall -O2
import "C"

import (
	"os"

	// The device cgroup controller (v1 rules, v2 eBPF programs).
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	// nsenter's constructor joins the container's namespaces before the Go
	// runtime starts when the binary is re-executed as a container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// MaybeInit turns the process into a container's init when libcontainer
// re-executed the binary for it ("init" argument); then it never returns.
// Call it first thing in main (and in TestMain). The monitor (monitor.c)
// needs no call: it runs from an ELF constructor before main.
func MaybeInit() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init()
	}
}
