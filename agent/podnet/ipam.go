package podnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrExhausted is returned by Setup (wrapped) when every address of the
// node's pod CIDR is taken.
var ErrExhausted = errors.New("pod CIDR exhausted")

// ipamFile holds the allocations; ipamLock is flocked around every
// read-modify-write so two processes on one data dir (an agent and its
// not-quite-dead predecessor) never hand out one address twice.
const (
	ipamFile = "ipam.json"
	ipamLock = "ipam.lock"
)

// ipamState is the on-disk allocation table.
type ipamState struct {
	// Allocations maps an address to the UID of the pod holding it.
	Allocations map[netip.Addr]string `json:"allocations"`
	// Last is the address handed out last; the next search starts after
	// it, so a freed address is not reused at once (like CNI host-local).
	Last netip.Addr `json:"last,omitzero"`
}

// ipam is a host-local allocator over one pod CIDR: the network address,
// the gateway (first address) and the broadcast address are never handed
// out.
type ipam struct {
	dir    string
	prefix netip.Prefix
	mu     sync.Mutex // flock is per open file; this orders our own goroutines
}

func newIPAM(dir string, prefix netip.Prefix) (*ipam, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam dir: %w", err)
	}
	a := &ipam{dir: dir, prefix: prefix.Masked()}
	// Fail early on a damaged state file rather than on the first pod.
	if err := a.locked(func(*ipamState) (bool, error) { return false, nil }); err != nil {
		return nil, err
	}
	return a, nil
}

// gatewayOf is the first address of the pod CIDR: the pods' next hop.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// Allocate returns the address held by uid, or assigns a free one.
func (a *ipam) Allocate(uid string) (netip.Addr, error) {
	if uid == "" {
		return netip.Addr{}, errors.New("ipam: empty pod UID")
	}
	var got netip.Addr
	err := a.locked(func(st *ipamState) (bool, error) {
		for ip, owner := range st.Allocations {
			if owner == uid && a.prefix.Contains(ip) {
				got = ip
				return false, nil
			}
		}
		first := gatewayOf(a.prefix).Next()
		last := lastAddr(a.prefix).Prev() // broadcast excluded
		start := first
		if st.Last.IsValid() && a.prefix.Contains(st.Last) && st.Last.Compare(last) < 0 && st.Last.Compare(first) >= 0 {
			start = st.Last.Next()
		}
		ip := start
		for {
			if _, used := st.Allocations[ip]; !used {
				st.Allocations[ip] = uid
				st.Last = ip
				got = ip
				return true, nil
			}
			if ip == last {
				ip = first
			} else {
				ip = ip.Next()
			}
			if ip == start {
				return false, fmt.Errorf("%w: all %d addresses of %s are in use", ErrExhausted, len(st.Allocations), a.prefix)
			}
		}
	})
	return got, err
}

// Release frees every address uid holds; releasing nothing is no error.
func (a *ipam) Release(uid string) error {
	return a.locked(func(st *ipamState) (bool, error) {
		changed := false
		for ip, owner := range st.Allocations {
			if owner == uid {
				delete(st.Allocations, ip)
				changed = true
			}
		}
		return changed, nil
	})
}

// Retain frees the addresses of pods not in live, and addresses outside the
// current pod CIDR (left from an earlier CIDR of this node). It returns the
// UIDs whose addresses it freed, sorted.
func (a *ipam) Retain(live map[string]bool) ([]string, error) {
	var freed []string
	err := a.locked(func(st *ipamState) (bool, error) {
		seen := map[string]bool{}
		for ip, owner := range st.Allocations {
			if live[owner] && a.prefix.Contains(ip) {
				continue
			}
			delete(st.Allocations, ip)
			if !seen[owner] {
				seen[owner] = true
				freed = append(freed, owner)
			}
		}
		sort.Strings(freed)
		return len(freed) > 0, nil
	})
	return freed, err
}

// List returns a copy of the allocations.
func (a *ipam) List() (map[netip.Addr]string, error) {
	var out map[netip.Addr]string
	err := a.locked(func(st *ipamState) (bool, error) {
		out = make(map[netip.Addr]string, len(st.Allocations))
		for k, v := range st.Allocations {
			out[k] = v
		}
		return false, nil
	})
	return out, err
}

// locked runs fn on the state under the lock and writes the state back if
// fn reports a change. The write is atomic (temporary file, fsync, rename),
// so a crash leaves either the old or the new table, never a torn one.
func (a *ipam) locked(fn func(*ipamState) (bool, error)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(a.dir, ipamLock), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("ipam lock: %w", err)
	}
	defer lf.Close()
	if err := flock(lf); err != nil {
		return fmt.Errorf("ipam lock: %w", err)
	}
	st, err := a.read()
	if err != nil {
		return err
	}
	changed, err := fn(st)
	if err != nil || !changed {
		return err
	}
	return a.write(st)
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

func (a *ipam) read() (*ipamState, error) {
	path := filepath.Join(a.dir, ipamFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &ipamState{Allocations: map[netip.Addr]string{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam: read %s: %w", path, err)
	}
	var st ipamState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("ipam: %s is damaged (move it away and restart to rebuild from running pods): %w", path, err)
	}
	if st.Allocations == nil {
		st.Allocations = map[netip.Addr]string{}
	}
	return &st, nil
}

func (a *ipam) write(st *ipamState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("ipam: encode: %w", err)
	}
	path := filepath.Join(a.dir, ipamFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("ipam: write: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ipam: write %s: %w", path, werr)
	}
	return nil
}

// lastAddr is the highest address of p (the broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
