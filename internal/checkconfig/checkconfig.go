// Package checkconfig checks that a machine has the kernel and system
// features orch needs (`orch check-config`): namespaces, cgroup controllers
// (v1 or v2), overlayfs, the veth/bridge/VXLAN links, nf_tables with every
// expression orch's rules use, seccomp, forwarding sysctls, swap and free
// ports. Where it can, a check probes the kernel itself (as root, in a
// throw-away network namespace it creates and destroys: no traffic, nothing
// on the host changes); otherwise it reads the kernel configuration
// (/proc/config.gz or /boot/config-<release>) and /proc.
package checkconfig

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// Status is the outcome of one check.
type Status int

// Outcomes, from best to worst.
const (
	Pass Status = iota
	Warn        // orch runs, with a limitation
	Fail        // orch (or the part named) cannot run
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "pass"
	case Warn:
		return "warn"
	case Fail:
		return "FAIL"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is one row of the report.
type Result struct {
	Group  string // "kernel", "namespaces", "cgroups", "network", "nftables", "system"
	Name   string
	Status Status
	Detail string // what was found
	Fix    string // what to do when Status is not Pass
}

// Report is the outcome of every check.
type Report struct {
	Results []Result
}

// Failed reports whether a required check failed.
func (r Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Count returns how many results have status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// WriteTable writes the report as an aligned table, then what to do about
// each failure and warning, then a summary line.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tCHECK\tSTATUS\tDETAIL")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Group, res.Name, res.Status, oneLine(res.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var todo []string
	for _, res := range r.Results {
		if res.Status != Pass && res.Fix != "" {
			todo = append(todo, fmt.Sprintf("  [%s] %s: %s", res.Status, res.Name, oneLine(res.Fix)))
		}
	}
	if len(todo) > 0 {
		fmt.Fprintf(w, "\nWhat to do:\n%s\n", strings.Join(todo, "\n"))
	}
	verdict := "orch can run on this machine"
	if r.Failed() {
		verdict = "orch cannot run on this machine until the failures are fixed"
	}
	_, err := fmt.Fprintf(w, "\n%d passed, %d warnings, %d failed: %s\n", r.Count(Pass), r.Count(Warn), r.Count(Fail), verdict)
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Port is a port orch listens on.
type Port struct {
	Number int
	Proto  string // "tcp" or "udp"
	Use    string // what listens there, for the report
}

// DefaultPorts are the ports of a server with its embedded agent: the API
// server and the VXLAN overlay. (The agent serves logs and exec through the
// server's tunnel: it listens on no port of its own.)
func DefaultPorts() []Port {
	return []Port{
		{Number: 6443, Proto: "tcp", Use: "API server (--https-listen-port)"},
		{Number: 8472, Proto: "udp", Use: "VXLAN overlay between nodes"},
	}
}

// Config says where to look. The zero value checks this machine.
type Config struct {
	// Root prefixes /proc, /sys and /boot (tests point it at a fake tree;
	// probes of the running kernel are skipped when it is set).
	Root string
	// Release is the kernel release (uname -r); read from the kernel if empty.
	Release string
	// Ports are checked for being free (DefaultPorts() if nil; empty to skip).
	Ports []Port
	// NoProbe skips the probes that create a network namespace (they need
	// root; without it they are skipped anyway).
	NoProbe bool
}

// Check runs every check.
func Check(ctx context.Context, cfg Config) Report {
	c := &checker{cfg: cfg}
	c.init()
	var r Report
	for _, f := range []func() []Result{
		c.kernel, c.namespaces, c.cgroups, c.filesystems, c.network, c.nftables, c.sysctls, c.seccomp, c.swap, c.ports,
	} {
		if ctx.Err() != nil {
			break
		}
		r.Results = append(r.Results, f()...)
	}
	return r
}

// checker holds what several checks share.
type checker struct {
	cfg      Config
	release  string
	kconfig  kernelConfig // nil when the kernel configuration was not found
	kcSource string
	kcErr    error
	probe    *probeResult // nil when probes did not run
	probeWhy string       // why not
}

func (c *checker) path(p string) string { return filepath.Join(c.cfg.Root, p) }

func (c *checker) init() {
	c.release = c.cfg.Release
	if c.release == "" {
		c.release = unameRelease()
	}
	for _, p := range []string{"/proc/config.gz", "/boot/config-" + c.release} {
		kc, err := readKernelConfig(c.path(p))
		if err == nil {
			c.kconfig, c.kcSource = kc, p
			break
		}
		if !os.IsNotExist(err) {
			c.kcErr = fmt.Errorf("%s: %w", p, err)
		}
	}
	switch {
	case c.cfg.Root != "":
		c.probeWhy = "not probing: checking a file tree, not this kernel"
	case c.cfg.NoProbe:
		c.probeWhy = "probes disabled"
	case os.Geteuid() != 0:
		c.probeWhy = "not root: run as root to probe the kernel"
	default:
		p, err := runProbes()
		if err != nil {
			c.probeWhy = "probe failed: " + err.Error()
		} else {
			c.probe = p
		}
	}
}

// configured reports what the kernel configuration says of option
// (CONFIG_ prefix optional): "y", "m", "n" or "" when unknown.
func (c *checker) configured(option string) string {
	if c.kconfig == nil {
		return ""
	}
	return c.kconfig.get(option)
}

// fromConfig turns kernel configuration options (any of which is enough)
// into a result, for when nothing better could be probed.
func (c *checker) fromConfig(group, name string, required bool, fix string, options ...string) Result {
	res := Result{Group: group, Name: name, Fix: fix}
	bad := Fail
	if !required {
		bad = Warn
	}
	if c.kconfig == nil {
		res.Status = Warn
		res.Detail = "unknown: no kernel configuration found (/proc/config.gz, /boot/config-" + c.release + ")"
		if c.probeWhy != "" {
			res.Detail += "; " + c.probeWhy
		}
		return res
	}
	var seen []string
	for _, o := range options {
		v := c.configured(o)
		seen = append(seen, "CONFIG_"+strings.TrimPrefix(o, "CONFIG_")+"="+orN(v))
		switch v {
		case "y":
			res.Status, res.Detail = Pass, "built in ("+seen[len(seen)-1]+")"
			return res
		case "m":
			res.Status, res.Detail = Pass, "module ("+seen[len(seen)-1]+")"
			return res
		}
	}
	res.Status = bad
	res.Detail = "not in the kernel: " + strings.Join(seen, ", ")
	return res
}

func orN(v string) string {
	if v == "" {
		return "n"
	}
	return v
}
