package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace pinned under /run/netns.
type NS struct {
	// Name is the namespace's name for `ip netns`.
	Name string
	// Path is the nsfs pin, /run/netns/Name.
	Path string
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn opens
// stay in the namespace after Do returns and may be used from any goroutine.
func (n NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromPath(n.Path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open %s: %w", n.Path, err)
			return
		}
		defer target.Close()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Handle opens a netlink handle on the namespace; the caller closes it.
func (n NS) Handle() (*netlink.Handle, error) {
	fd, err := netns.GetFromPath(n.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", n.Path, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return h, nil
}

// Command returns a command that runs inside the namespace (through
// `ip netns exec`, which also gives it a matching /sys).
func (n NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}
