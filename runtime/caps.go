package runtime

import (
	"strings"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// allCapabilities lists every capability the running kernel supports;
// bounded lists those of them in this process's bounding set (what a
// privileged container can get).
func allCapabilities() []string {
	list, err := capability.ListSupported()
	if err != nil {
		list = capability.ListKnown()
	}
	return capNames(list)
}

func boundedCapabilities() []string {
	list, err := capability.ListSupported()
	if err != nil {
		list = capability.ListKnown()
	}
	self, err := capability.NewPid2(0)
	if err == nil {
		err = self.Load()
	}
	if err != nil {
		return capNames(list)
	}
	var out []capability.Cap
	for _, c := range list {
		if self.Get(capability.BOUNDING, c) {
			out = append(out, c)
		}
	}
	return capNames(out)
}

func capNames(list []capability.Cap) []string {
	out := make([]string, 0, len(list))
	for _, c := range list {
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
}

// defaultSeccomp is the RuntimeDefault profile: everything is allowed except
// the system calls Docker's and containerd's default profiles keep from
// containers (kernel modules, kexec, reboot, clock and swap changes, kernel
// keyring, bpf, perf, userfaultfd, ptrace-like process inspection, mounts and
// namespace changes, handle-based opens, obsolete and dangerous syscalls),
// which fail with EPERM.
func defaultSeccomp() *specs.LinuxSeccomp {
	denied := []string{
		"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
		"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
		"get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
		"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
		"mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
		"open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
		"process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
		"quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday",
		"stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare",
		"uselib", "userfaultfd", "ustat", "vm86", "vm86old", "syslog",
	}
	errno := uint(1) // EPERM
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM},
		Syscalls: []specs.LinuxSyscall{
			{Names: denied, Action: specs.ActErrno, ErrnoRet: &errno},
		},
	}
}
