// Package runtime runs a pod's containers on runc's libcontainer, in
// process: no containerd, no runc binary, no shim daemon.
//
// A pod sandbox is a set of pinned namespaces (network, IPC, UTS) bind-mounted
// under <StateDir>/pods/<uid>/ns plus a pod-wide /dev/shm; each container
// joins them and gets its own mount and PID namespaces, a cgroup under
// Config.CgroupRoot and an overlayfs rootfs over the image's layer dirs.
//
// Containers outlive the orch process. A small C monitor (monitor.c, run from
// an ELF constructor when the binary is re-executed, before the Go runtime
// starts) holds the read ends of the container's stdout and stderr pipes and
// writes the CRI log file, and holds a pidfd of the container's init from
// which it records the exit status in a file once the init exits, whoever
// reaps it. A new Runtime on the same state directory re-adopts what is there
// (Recover) and removes what belongs to no container (the sweep). The monitor
// also serves the container's attach socket: with ContainerConfig.Stdin it
// holds the write end of the container's stdin, with TTY the terminal's
// master, and [Runtime.Attach] sessions connect to them.
//
// Starting and removing a container is kept short: the monitor starts while
// libcontainer starts the container (it gets the init's pidfd afterwards),
// the overlay rootfs is volatile (no sync of its upper dir on unmount), and a
// removed container's dir is renamed into <StateDir>/trash and deleted in
// the background (RemoveSandbox waits for that; Recover empties the trash).
//
// The binary that links this package must call [MaybeInit] first thing in
// main (and test binaries in TestMain): when it is re-executed as a
// container's init ("init" argument) that call never returns.
//
// libcontainer starts each container's init, and each exec's, by
// re-executing the binary that links it. For orch that would pay all of
// orch's start-up (its pages, hundreds of package initialisers: some 15 ms
// of CPU) per container start and exec probe, so the Runtime holds a small
// init that links only libcontainer (internal/initbin, built into orch by
// `make` with the orch_init tag, or [Config.InitBinary]) in a sealed memfd,
// and a constructor in this package (initexec.c) hands the init over to it
// before the Go runtime starts. Sealed, the memfd cannot be written by a
// container (CVE-2019-5736), as libcontainer's own clone of the binary.
package runtime
