package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetNS runs fn on an OS thread inside the network namespace at path ("" is
// the caller's). Sockets fn opens stay in that namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func netlinkHandle(path string) (*netlink.Handle, error) {
	if path == "" {
		return netlink.NewHandle()
	}
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer fd.Close()
	return netlink.NewHandleAt(fd)
}

// dummy is the local interface holding the cluster DNS addresses.
type dummy struct {
	nsPath  string
	name    string
	created bool
	// fallback is set when the kernel lacks the dummy driver and lo holds
	// the addresses.
	fallback bool
	added    []netip.Addr
}

// ensureDummy makes sure link name exists (a dummy link, created if missing),
// is up, and holds addrs.
func ensureDummy(nsPath, name string, addrs []netip.Addr) (*dummy, error) {
	h, err := netlinkHandle(nsPath)
	if err != nil {
		return nil, fmt.Errorf("dns interface: %w", err)
	}
	defer h.Close()
	d := &dummy{nsPath: nsPath, name: name}
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("dns interface %s: %w", name, err)
		}
		switch err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); {
		case errors.Is(err, unix.EOPNOTSUPP):
			// A kernel without the dummy driver: the loopback device holds
			// the addresses instead (they are as local there).
			d.name, d.fallback = "lo", true
		case err != nil:
			return nil, fmt.Errorf("create dns interface %s: %w", name, err)
		default:
			d.created = true
		}
		if link, err = h.LinkByName(d.name); err != nil {
			return nil, errors.Join(fmt.Errorf("dns interface %s: %w", d.name, err), d.remove())
		}
	} else if link.Type() != "dummy" {
		return nil, fmt.Errorf("dns interface %s exists and is a %s link, not dummy", name, link.Type())
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, errors.Join(fmt.Errorf("set %s up: %w", name, err), d.remove())
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("list %s addresses: %w", name, err), d.remove())
	}
	for _, a := range addrs {
		bits := 32
		if a.Is6() {
			bits = 128
		}
		if slicesContainsIP(have, a) {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return nil, errors.Join(fmt.Errorf("add %s to %s: %w", a, d.name, err), d.remove())
		}
		d.added = append(d.added, a)
	}
	return d, nil
}

func slicesContainsIP(have []netlink.Addr, a netip.Addr) bool {
	for _, h := range have {
		if b, ok := netip.AddrFromSlice(h.IP); ok && b.Unmap() == a {
			return true
		}
	}
	return false
}

// remove deletes the link if ensureDummy created it, else the addresses it added.
func (d *dummy) remove() error {
	h, err := netlinkHandle(d.nsPath)
	if err != nil {
		return fmt.Errorf("dns interface: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(d.name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("dns interface %s: %w", d.name, err)
	}
	if d.created {
		if err := h.LinkDel(link); err != nil {
			return fmt.Errorf("delete %s: %w", d.name, err)
		}
		return nil
	}
	var errs []error
	for _, a := range d.added {
		bits := 32
		if a.Is6() {
			bits = 128
		}
		if err := h.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", a, d.name, err))
		}
	}
	return errors.Join(errs...)
}
