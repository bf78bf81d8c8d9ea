package podnet

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// sysctl is one setting under /proc/sys; an optional one is skipped when
// the kernel does not have it.
type sysctl struct {
	path, value string
	optional    bool
}

// nodeSysctls are the settings forwarding between pods, nodes and the
// overlay needs. Pods are routed, not bridged, so nothing here depends on
// br_netfilter (legacy.go sets what a legacy bridge needs).
var nodeSysctls = []sysctl{
	{"net/ipv4/ip_forward", "1", false},
}

// setSysctls writes nodeSysctls in the node's network namespace.
func (n *Network) setSysctls() error { return n.writeSysctls(nodeSysctls) }

// writeSysctls writes settings in the node's network namespace.
// /proc/sys/net resolves to the namespace of the thread that opens it, so
// the writes run on a thread switched into the node namespace when one is
// configured.
func (n *Network) writeSysctls(settings []sysctl) error {
	write := func() error {
		var errs []error
		for _, s := range settings {
			p := "/proc/sys/" + s.path
			cur, err := os.ReadFile(p)
			if err != nil {
				if s.optional && errors.Is(err, os.ErrNotExist) {
					n.log.Debug("sysctl not available", "sysctl", strings.ReplaceAll(s.path, "/", "."))
					continue
				}
				errs = append(errs, fmt.Errorf("read %s: %w", p, err))
				continue
			}
			if strings.TrimSpace(string(cur)) == s.value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set %s=%s: %w", p, s.value, err))
			}
		}
		return errors.Join(errs...)
	}
	return n.inNodeNS(write)
}

// inNodeNS runs fn on a thread in the node's network namespace.
func (n *Network) inNodeNS(fn func() error) error {
	if !n.nodeNS.IsOpen() {
		return fn()
	}
	return inNS(n.nodeNS, fn)
}

// inNS runs fn on a locked OS thread switched into ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter node netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and exits with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave node netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
