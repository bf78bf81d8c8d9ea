package checkconfig

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// minMajor.minMinor is the oldest kernel orch supports: nf_tables with fib,
// numgen and concatenated verdict maps, cgroup namespaces, overlayfs with
// several lower layers.
const minMajor, minMinor = 4, 15

func (c *checker) kernel() []Result {
	res := Result{Group: "kernel", Name: "version"}
	major, minor, err := kernelVersion(c.release)
	switch {
	case err != nil:
		res.Status, res.Detail = Warn, err.Error()
	case major < minMajor || major == minMajor && minor < minMinor:
		res.Status, res.Detail = Fail, fmt.Sprintf("%s is older than %d.%d", c.release, minMajor, minMinor)
		res.Fix = fmt.Sprintf("upgrade to a kernel >= %d.%d", minMajor, minMinor)
	default:
		res.Status, res.Detail = Pass, c.release
	}
	kc := Result{Group: "kernel", Name: "configuration"}
	switch {
	case c.kconfig != nil:
		kc.Status, kc.Detail = Pass, c.kcSource
	case c.kcErr != nil:
		kc.Status, kc.Detail = Warn, "unreadable: "+c.kcErr.Error()
		kc.Fix = "checks fall back to probes and /proc"
	default:
		kc.Status, kc.Detail = Warn, "neither /proc/config.gz nor /boot/config-"+c.release
		kc.Fix = "checks fall back to probes and /proc; `modprobe configs` provides /proc/config.gz on some kernels"
	}
	return []Result{res, kc}
}

func (c *checker) namespaces() []Result {
	var out []Result
	for _, ns := range []struct {
		file, name, option string
		required           bool
	}{
		{"net", "network", "NET_NS", true},
		{"pid", "pid", "PID_NS", true},
		{"ipc", "ipc", "IPC_NS", true},
		{"uts", "uts", "UTS_NS", true},
		{"mnt", "mount", "NAMESPACES", true},
		{"cgroup", "cgroup", "CGROUP_NS", true},
		{"user", "user (optional)", "USER_NS", false},
	} {
		res := Result{Group: "namespaces", Name: ns.name}
		if _, err := os.Lstat(c.path("/proc/self/ns/" + ns.file)); err == nil {
			res.Status, res.Detail = Pass, "supported"
		} else {
			res.Status, res.Detail = Fail, "no /proc/self/ns/"+ns.file
			res.Fix = "build the kernel with CONFIG_" + ns.option + "=y"
			if !ns.required {
				res.Status = Warn
				res.Detail += ": orch does not use user namespaces yet"
				res.Fix = ""
			}
		}
		out = append(out, res)
	}
	return out
}

func (c *checker) cgroups() []Result {
	mi, err := os.ReadFile(c.path("/proc/self/mountinfo"))
	if err != nil {
		return []Result{{Group: "cgroups", Name: "mount", Status: Fail, Detail: err.Error(), Fix: "mount /proc"}}
	}
	v2, found, err := mountedCgroup2(bytes.NewReader(mi))
	if err != nil || !found {
		return []Result{{Group: "cgroups", Name: "mount", Status: Fail, Detail: "nothing mounted at /sys/fs/cgroup",
			Fix: "mount cgroups at /sys/fs/cgroup (cgroup2, or a tmpfs with the v1 controllers)"}}
	}
	if v2 {
		return c.cgroupsV2()
	}
	return c.cgroupsV1()
}

// cgroupFix says how to get a v1 controller.
func cgroupFix(name string) string {
	return map[string]string{
		"cpu":     "CONFIG_CGROUP_SCHED and CONFIG_FAIR_GROUP_SCHED",
		"cpuacct": "CONFIG_CGROUP_CPUACCT",
		"memory":  "CONFIG_MEMCG (and cgroup_enable=memory on the kernel command line, e.g. on Raspberry Pi)",
		"pids":    "CONFIG_CGROUP_PIDS",
		"devices": "CONFIG_CGROUP_DEVICE",
		"freezer": "CONFIG_CGROUP_FREEZER",
	}[name]
}

func (c *checker) cgroupsV1() []Result {
	out := []Result{{Group: "cgroups", Name: "version", Status: Pass, Detail: "v1 (legacy or hybrid)"}}
	b, err := os.ReadFile(c.path("/proc/cgroups"))
	if err != nil {
		return append(out, Result{Group: "cgroups", Name: "controllers", Status: Fail, Detail: err.Error()})
	}
	ctrls, err := parseProcCgroups(bytes.NewReader(b))
	if err != nil {
		return append(out, Result{Group: "cgroups", Name: "controllers", Status: Fail, Detail: err.Error()})
	}
	for _, name := range []string{"cpu", "cpuacct", "memory", "pids", "devices", "freezer"} {
		res := Result{Group: "cgroups", Name: name}
		cg, ok := ctrls[name]
		switch {
		case !ok:
			res.Status, res.Detail = Fail, "not in the kernel"
			res.Fix = "build the kernel with " + cgroupFix(name)
		case !cg.enabled:
			res.Status, res.Detail = Fail, "disabled"
			res.Fix = "enable it on the kernel command line (cgroup_enable=" + name + ")"
		case cg.hierarchy == 0:
			res.Status, res.Detail = Fail, "not mounted"
			res.Fix = "mount it at /sys/fs/cgroup/" + name + " (cgroupfs-mount, or systemd does it)"
		default:
			res.Status, res.Detail = Pass, "enabled, hierarchy "+strconv.Itoa(cg.hierarchy)
		}
		out = append(out, res)
	}
	return out
}

func (c *checker) cgroupsV2() []Result {
	out := []Result{{Group: "cgroups", Name: "version", Status: Pass, Detail: "v2 (unified)"}}
	b, err := os.ReadFile(c.path("/sys/fs/cgroup/cgroup.controllers"))
	if err != nil {
		return append(out, Result{Group: "cgroups", Name: "controllers", Status: Fail, Detail: err.Error()})
	}
	have := map[string]bool{}
	for _, f := range strings.Fields(string(b)) {
		have[f] = true
	}
	for _, name := range []string{"cpu", "memory", "pids"} {
		res := Result{Group: "cgroups", Name: name, Status: Pass, Detail: "available"}
		if !have[name] {
			res.Status, res.Detail = Fail, "not in cgroup.controllers"
			res.Fix = "build the kernel with " + cgroupFix(name) + "; if it is, it may be bound to a v1 hierarchy"
		}
		out = append(out, res)
	}
	out = append(out, Result{Group: "cgroups", Name: "cpuacct", Status: Pass, Detail: "part of cpu in v2"})
	dev := c.fromConfig("cgroups", "devices", true, "build the kernel with CONFIG_CGROUP_BPF (v2 device control is eBPF)", "CGROUP_BPF")
	out = append(out, dev)
	frz := Result{Group: "cgroups", Name: "freezer"}
	if major, minor, err := kernelVersion(c.release); err == nil && (major > 5 || major == 5 && minor >= 2) {
		frz.Status, frz.Detail = Pass, "cgroup.freeze (kernel >= 5.2)"
	} else {
		frz.Status, frz.Detail = Fail, "cgroup.freeze needs kernel >= 5.2"
		frz.Fix = "upgrade the kernel, or boot with cgroup v1 (systemd.unified_cgroup_hierarchy=0)"
	}
	return append(out, frz)
}

func (c *checker) filesystems() []Result {
	res := Result{Group: "kernel", Name: "overlayfs"}
	b, err := os.ReadFile(c.path("/proc/filesystems"))
	var fss map[string]bool
	if err == nil {
		fss, err = parseFilesystems(bytes.NewReader(b))
	}
	switch {
	case err == nil && fss["overlay"]:
		res.Status, res.Detail = Pass, "in /proc/filesystems"
	case c.configured("OVERLAY_FS") == "m":
		res.Status, res.Detail = Pass, "module, not loaded yet (the service runs modprobe overlay)"
	default:
		res = c.fromConfig("kernel", "overlayfs", true, "build the kernel with CONFIG_OVERLAY_FS (or modprobe overlay)", "OVERLAY_FS")
		if res.Status == Pass { // =y yet not listed: odd, but trust the kernel
			res.Status, res.Detail = Fail, "configured but not in /proc/filesystems"
		}
	}
	return []Result{res}
}

func (c *checker) network() []Result {
	var out []Result
	for _, l := range []struct {
		kind, option, fix string
		required          bool
	}{
		{"veth", "VETH", "build the kernel with CONFIG_VETH (pod network interfaces)", true},
		{"bridge", "BRIDGE", "build the kernel with CONFIG_BRIDGE (only to upgrade a node whose pods are still on the bridge orch0 of orch before routed pod veths)", false},
		{"vxlan", "VXLAN", "build the kernel with CONFIG_VXLAN, or run every node with the host-gw backend (pods on other nodes are unreachable otherwise)", false},
	} {
		name := l.kind + " links"
		if c.probe != nil {
			res := Result{Group: "network", Name: name, Status: Pass, Detail: "created one in a scratch network namespace"}
			if err := c.probe.links[l.kind]; err != nil {
				res.Status, res.Detail, res.Fix = Fail, "cannot create one: "+err.Error(), l.fix
				if !l.required {
					res.Status = Warn
				}
			}
			out = append(out, res)
			continue
		}
		out = append(out, c.fromConfig("network", name, l.required, l.fix, l.option))
	}
	// The vxlan backend's eBPF fast path (agent/podnet/fastpath.go); without
	// any of these, pod traffic takes the kernel's normal path.
	const slower = " (or pods use the kernel's normal forwarding path: slower)"
	for _, f := range []struct{ name, option, what string }{
		{"pod fast path: tcx", "NET_XGRESS", "tcx programs (Linux 6.6+)"},
		{"pod fast path: tc bpf", "NET_CLS_BPF", "bpf tc filters"},
		{"pod fast path: clsact", "NET_SCH_INGRESS", "the clsact qdisc"},
		{"pod fast path: BTF", "DEBUG_INFO_BTF", "kernel BTF (the conntrack kfuncs' ids)"},
	} {
		out = append(out, c.fromConfig("network", f.name, false, "build the kernel with CONFIG_"+f.option+": "+f.what+slower, f.option))
	}
	return out
}

// nftFeatures are what orch's rules use, the probe name, and the kernel
// options that provide them.
func nftFeatures() []struct{ name, probe, option string } {
	return []struct{ name, probe, option string }{
		{"nat chains", "nat", "NFT_NAT"},
		{"verdict maps", "vmap", "NF_TABLES_SET"},
		{"fib", "fib", "NFT_FIB_IPV4"},
		{"numgen", "numgen", "NFT_NUMGEN"},
		{"ct", "ct", "NFT_CT"},
		{"dnat", "dnat", "NFT_NAT"},
		{"masquerade", "masq", "NFT_MASQ"},
		{"reject", "reject", "NFT_REJECT"},
	}
}

func (c *checker) nftables() []Result {
	const fixBase = "build the kernel with CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV4"
	if c.probe == nil {
		out := []Result{c.fromConfig("nftables", "nf_tables", true, fixBase, "NF_TABLES")}
		for _, f := range nftFeatures() {
			opts := []string{f.option}
			if f.probe == "vmap" {
				opts = []string{"NF_TABLES_SET", "NF_TABLES"} // sets are part of nf_tables since 4.19
			}
			out = append(out, c.fromConfig("nftables", f.name, true, "build the kernel with CONFIG_"+f.option, opts...))
		}
		return out
	}
	base := Result{Group: "nftables", Name: "nf_tables", Status: Pass, Detail: "created a table in a scratch network namespace"}
	if c.probe.nftErr != nil {
		base.Status, base.Detail, base.Fix = Fail, c.probe.nftErr.Error(), fixBase
		return []Result{base}
	}
	out := []Result{base}
	for _, f := range nftFeatures() {
		res := Result{Group: "nftables", Name: f.name, Status: Pass, Detail: "accepted by the kernel"}
		if err := c.probe.nft[f.probe]; err != nil {
			res.Status, res.Detail, res.Fix = Fail, "rejected: "+err.Error(), "build the kernel with CONFIG_"+f.option
		}
		out = append(out, res)
	}
	return out
}

func (c *checker) sysctls() []Result {
	const p = "/proc/sys/net/ipv4/ip_forward"
	res := Result{Group: "system", Name: "net.ipv4.ip_forward"}
	cur, err := os.ReadFile(c.path(p))
	if err != nil {
		res.Status, res.Detail, res.Fix = Fail, err.Error(), "mount /proc with IPv4 networking"
		return []Result{res}
	}
	now := strings.TrimSpace(string(cur))
	switch {
	case c.probe != nil && c.probe.ipForward != nil:
		res.Status, res.Detail = Fail, "now "+now+"; cannot be set: "+c.probe.ipForward.Error()
		res.Fix = "orch sets it at start: run orch where /proc/sys is writable (not in an unprivileged container)"
	case c.probe != nil:
		res.Status, res.Detail = Pass, "now "+now+"; settable (orch sets 1 at start)"
	case c.cfg.Root == "" && unix.Access(p, unix.W_OK) != nil && now != "1":
		res.Status, res.Detail = Fail, "now "+now+" and not writable by this user"
		res.Fix = "run orch as root, or set net.ipv4.ip_forward=1 in /etc/sysctl.d"
	default:
		res.Status, res.Detail = Pass, "now "+now
	}
	return []Result{res}
}

func (c *checker) seccomp() []Result {
	res := Result{Group: "kernel", Name: "seccomp"}
	b, err := os.ReadFile(c.path("/proc/self/status"))
	if err != nil {
		res.Status, res.Detail = Warn, err.Error()
		return []Result{res}
	}
	st := string(b)
	switch {
	case !strings.Contains(st, "\nSeccomp:"):
		res.Status, res.Detail = Fail, "no seccomp in /proc/self/status"
		res.Fix = "build the kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER (containers get a default seccomp profile)"
	case c.configured("SECCOMP_FILTER") == "n":
		res.Status, res.Detail = Fail, "CONFIG_SECCOMP_FILTER is not set"
		res.Fix = "build the kernel with CONFIG_SECCOMP_FILTER"
	default:
		res.Status, res.Detail = Pass, "filter mode"
	}
	return []Result{res}
}

func (c *checker) swap() []Result {
	res := Result{Group: "system", Name: "swap"}
	b, err := os.ReadFile(c.path("/proc/swaps"))
	if err != nil {
		res.Status, res.Detail = Warn, err.Error()
		return []Result{res}
	}
	devs, err := parseSwaps(bytes.NewReader(b))
	switch {
	case err != nil:
		res.Status, res.Detail = Warn, err.Error()
	case len(devs) > 0:
		res.Status, res.Detail = Warn, "on ("+strings.Join(devs, ", ")+"): memory limits do not bound swap use and pods may be slow rather than evicted"
		res.Fix = "swapoff -a and remove swap from /etc/fstab, if the node does not need it"
	default:
		res.Status, res.Detail = Pass, "off"
	}
	return []Result{res}
}

func (c *checker) ports() []Result {
	ports := c.cfg.Ports
	if ports == nil {
		ports = DefaultPorts()
	}
	sort.SliceStable(ports, func(i, j int) bool { return ports[i].Number < ports[j].Number })
	var out []Result
	for _, p := range ports {
		res := Result{Group: "ports", Name: fmt.Sprintf("%d/%s", p.Number, p.Proto)}
		err := portFree(p)
		switch {
		case err == nil:
			res.Status, res.Detail = Pass, "free ("+p.Use+")"
		case errors.Is(err, syscall.EADDRINUSE):
			res.Status, res.Detail = Fail, "in use: "+p.Use+" needs it"
			res.Fix = fmt.Sprintf("stop what listens there (ss -lnp | grep %d), or orch itself if it already runs", p.Number)
		default:
			res.Status, res.Detail = Warn, "cannot tell: "+err.Error()
		}
		out = append(out, res)
	}
	return out
}

// portFree binds the port on every address for a moment: nothing is sent.
func portFree(p Port) error {
	addr := ":" + strconv.Itoa(p.Number)
	switch p.Proto {
	case "tcp":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return l.Close()
	case "udp":
		l, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return l.Close()
	}
	return fmt.Errorf("unknown protocol %q", p.Proto)
}
