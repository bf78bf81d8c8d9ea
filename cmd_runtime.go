package main

import (
	orchruntime "github.com/orch-dev/orch/runtime"
)

// runtimeInitHook must run first thing in main: when libcontainer re-executes
// this binary as a container's init ("orch init"), it becomes that init and
// never returns. (The container monitor needs no hook: it runs from an ELF
// constructor in the runtime package before the Go runtime starts.)
func runtimeInitHook() {
	orchruntime.MaybeInit()
}
