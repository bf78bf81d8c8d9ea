// Command initbin is the container init that orch's runtime runs in place
// of the whole orch binary: libcontainer starts a container (or an exec
// in one) by re-executing its own binary with the "init" argument, and for
// orch that pays the start-up of everything orch links (tens of MB mapped,
// hundreds of package initialisers) on every container start and exec
// probe. This binary links only libcontainer.
//
// The Makefile builds it, gzipped, into internal/initbin/orch-init.gz, which
// the runtime package embeds with the orch_init build tag. The runtime keeps
// it in a sealed memfd (so a container can never write to the binary that
// runs as its init, CVE-2019-5736) and a constructor in the orch binary
// (../../initexec.c) hands the init over to it before nsexec and the Go
// runtime start.
package main

import (
	"fmt"
	"os"

	// The device cgroup controller (v1 rules, v2 eBPF programs).
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	// nsenter's constructor joins the container's namespaces before the Go
	// runtime starts.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init() // never returns
	}
	fmt.Fprintln(os.Stderr, "orch-init: the container init of orch's runtime; not for running by hand")
	os.Exit(2)
}
