// Package lab builds a throw-away multi-host network out of Linux network
// namespaces for real-kernel tests: N cluster hosts and one client host, each
// a named network namespace with an eth0 plugged into a switch (a bridge) that
// lives in a separate lab namespace. Nothing is created in the machine's own
// network namespace, so the lab's traffic cannot leave it.
//
// Every namespace is named Prefix + "<owner pid>-<run id>-<role>". New sweeps
// namespaces (and cgroup directories) left by runs whose owner process is
// gone before it creates its own, deletes everything it made in t.Cleanup,
// and also when the test process gets SIGINT or SIGTERM. scripts/lab.sh
// builds the same layout by hand with the same prefix (run id "sh", owner a
// keeper process), so one sweep covers both.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace and cgroup the lab creates.
const Prefix = "orchlab-"

// Subnet is the hosts' network. It exists only inside the lab's namespaces.
var Subnet = netip.MustParsePrefix("172.31.250.0/24")

// ClientIP is the address of the client host, a machine outside the cluster.
var ClientIP = netip.MustParseAddr("172.31.250.200")

// netnsDir is where iproute2 (and vishvananda/netns) pin named namespaces.
const netnsDir = "/run/netns"

// cgroupRoot is the cgroup filesystem; every hierarchy below it is swept.
const cgroupRoot = "/sys/fs/cgroup"

// switchName is the bridge in the lab namespace that joins the hosts.
const switchName = "sw0"

// Lab is one lab network. Its fields are read-only after New.
type Lab struct {
	// ID is the run's name part: Prefix + ID + "-" + role names a namespace.
	ID string
	// Switch is the namespace holding the bridge that joins the hosts.
	Switch NS
	// Hosts are the cluster hosts, 172.31.250.10 upwards.
	Hosts []*Host
	// Client is a host on the same segment that is not part of the cluster.
	Client *Host

	mu       sync.Mutex
	nss      []NS // every namespace created, in creation order
	cgroups  []string
	teardown sync.Once
	stopSig  chan struct{}
}

// Host is one lab machine.
type Host struct {
	NS
	// Role is the short name: h0, h1, ... or client.
	Role string
	// IP is eth0's address, inside Subnet.
	IP netip.Addr
	// Iface is the host's uplink name, eth0.
	Iface string
	// DataDir is a private directory for this host's state.
	DataDir string
	// CgroupRoot is a cgroup name unique to this host and run; the sweep
	// removes cgroup directories with this name left by a crashed run.
	CgroupRoot string
}

// New builds a lab of n cluster hosts plus a client host. It fails the test
// on error and undoes everything it did when the test ends. It needs root.
func New(t testing.TB, n int) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab needs root (network namespaces)")
	}
	if n < 1 || n > 150 {
		t.Fatalf("lab: %d hosts, want 1..150", n)
	}
	if err := Sweep(); err != nil {
		t.Logf("lab: sweep of earlier runs: %v", err)
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("lab: random id: %v", err)
	}
	l := &Lab{ID: fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(rnd[:])), stopSig: make(chan struct{})}
	l.watchSignals()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab teardown: %v", err)
		}
	})
	if err := l.build(t, n); err != nil {
		t.Fatalf("lab: %v", err)
	}
	return l
}

func (l *Lab) build(t testing.TB, n int) error {
	sw, err := l.newNS("switch")
	if err != nil {
		return err
	}
	l.Switch = sw
	swh, err := sw.Handle()
	if err != nil {
		return err
	}
	defer swh.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: switchName}}
	if err := swh.LinkAdd(br); err != nil {
		return fmt.Errorf("add switch bridge: %w", err)
	}
	if err := swh.LinkSetUp(br); err != nil {
		return fmt.Errorf("switch bridge up: %w", err)
	}
	for i := 0; i < n; i++ {
		h, err := l.addHost(t, swh, br, fmt.Sprintf("h%d", i), Subnet.Addr().As4(), byte(10+i))
		if err != nil {
			return err
		}
		l.Hosts = append(l.Hosts, h)
	}
	l.Client, err = l.addHost(t, swh, br, "client", Subnet.Addr().As4(), ClientIP.As4()[3])
	return err
}

func (l *Lab) addHost(t testing.TB, swh *netlink.Handle, br netlink.Link, role string, base [4]byte, last byte) (*Host, error) {
	ns, err := l.newNS(role)
	if err != nil {
		return nil, err
	}
	base[3] = last
	h := &Host{NS: ns, Role: role, IP: netip.AddrFrom4(base), Iface: "eth0", DataDir: t.TempDir(),
		CgroupRoot: Prefix + l.ID + "-" + role}
	l.mu.Lock()
	l.cgroups = append(l.cgroups, h.CgroupRoot)
	l.mu.Unlock()
	fd, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ns.Path, err)
	}
	defer fd.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: role, MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName:      h.Iface,
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := swh.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth for %s: %w", role, err)
	}
	hh, err := ns.Handle()
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	if err := LinkUp(hh, "lo"); err != nil {
		return nil, err
	}
	eth, err := hh.LinkByName(h.Iface)
	if err != nil {
		return nil, fmt.Errorf("%s: find %s: %w", role, h.Iface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.IP.AsSlice(), Mask: net.CIDRMask(Subnet.Bits(), 32)}}
	if err := hh.AddrAdd(eth, addr); err != nil {
		return nil, fmt.Errorf("%s: address %s: %w", role, h.IP, err)
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("%s: %s up: %w", role, h.Iface, err)
	}
	return h, nil
}

// LinkUp sets the named link up through h.
func LinkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// NewNS creates one more namespace (for example a pod's) with the lab's
// prefix; it is deleted with the lab, or earlier by DeleteNS.
func (l *Lab) NewNS(t testing.TB, role string) NS {
	t.Helper()
	ns, err := l.newNS(role)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return ns
}

// DeleteNS deletes a namespace made by NewNS before the lab ends: processes
// still inside it are killed, then the pin is removed.
func (l *Lab) DeleteNS(ns NS) error {
	l.mu.Lock()
	for i, n := range l.nss {
		if n.Name == ns.Name {
			l.nss = append(l.nss[:i], l.nss[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	return deleteNS(ns.Name)
}

func (l *Lab) newNS(role string) (NS, error) {
	if strings.ContainsAny(role, "/ ") || role == "" {
		return NS{}, fmt.Errorf("bad namespace role %q", role)
	}
	name := Prefix + l.ID + "-" + role
	l.mu.Lock()
	l.nss = append(l.nss, NS{Name: name, Path: filepath.Join(netnsDir, name)})
	l.mu.Unlock()
	if err := createNamed(name); err != nil {
		return NS{}, err
	}
	return NS{Name: name, Path: filepath.Join(netnsDir, name)}, nil
}

// createNamed makes a pinned namespace without leaving any thread in it.
func createNamed(name string) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, so
		// whatever namespace it was left in dies with it.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(name)
		if err != nil {
			errc <- fmt.Errorf("create namespace %s: %w", name, err)
			return
		}
		ns.Close()
		errc <- nil
	}()
	return <-errc
}

// Close deletes everything the lab created. It is safe to call more than
// once; t.Cleanup calls it.
func (l *Lab) Close() error {
	var err error
	l.teardown.Do(func() {
		close(l.stopSig)
		l.mu.Lock()
		nss := append([]NS(nil), l.nss...)
		cgs := append([]string(nil), l.cgroups...)
		l.mu.Unlock()
		var errs []error
		// Hosts first, the switch last: deleting a host's namespace
		// deletes its veth pair with it.
		for i := len(nss) - 1; i >= 0; i-- {
			errs = append(errs, deleteNS(nss[i].Name))
		}
		for _, cg := range cgs {
			errs = append(errs, removeCgroups(cg))
		}
		err = errors.Join(errs...)
	})
	return err
}

// watchSignals tears the lab down when the test process is interrupted, then
// lets the signal take its default course.
func (l *Lab) watchSignals() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		defer signal.Stop(c)
		select {
		case s := <-c:
			_ = l.Close()
			signal.Stop(c)
			if sig, ok := s.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), sig)
			}
		case <-l.stopSig:
		}
	}()
}

// Sweep deletes namespaces and cgroups with the lab prefix whose owner
// process no longer exists: leftovers of crashed runs. Live labs of
// parallel test processes and of lab.sh are left alone.
func Sweep() error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", netnsDir, err)
	}
	var errs []error
	for _, e := range entries {
		if stale(e.Name()) {
			errs = append(errs, deleteNS(e.Name()))
		}
	}
	hier, err := os.ReadDir(cgroupRoot)
	if err == nil {
		for _, h := range hier {
			dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, h.Name(), Prefix+"*"))
			for _, d := range dirs {
				if stale(filepath.Base(d)) {
					errs = append(errs, removeTree(d))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// stale reports whether name has the lab prefix and a dead owner.
func stale(name string) bool {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return false
	}
	pidStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return true // not a name New or lab.sh would make: garbage
	}
	return !alive(pid)
}

// alive reports whether pid is a running process (a zombie is dead).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// deleteNS kills the processes inside the named namespace and removes its
// pin; the kernel frees the namespace (and its links) once unused.
func deleteNS(name string) error {
	path := filepath.Join(netnsDir, name)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("stat %s: %w", path, err)
	}
	killInNetns(st.Ino)
	if err := netns.DeleteNamed(name); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// killInNetns SIGKILLs every process whose network namespace has inode ino.
// Such a process can only have been started inside a lab namespace.
func killInNetns(ino uint64) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if st.Ino == ino {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeCgroups removes the cgroup directory name in every hierarchy.
func removeCgroups(name string) error {
	hier, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil
	}
	var errs []error
	for _, h := range hier {
		errs = append(errs, removeTree(filepath.Join(cgroupRoot, h.Name(), name)))
	}
	return errors.Join(errs...)
}

// removeTree rmdirs a cgroup directory depth first (cgroup directories
// cannot be removed with their control files by os.RemoveAll).
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Killed processes leave the cgroup only once they are gone: retry
	// while it is busy.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || os.IsNotExist(err) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopHost switches a host off: every process in its network namespace and
// in its cgroup tree (Host.CgroupRoot, in every hierarchy) is killed, and its
// namespace, with its links, is deleted. Its data directory and whatever is
// mounted below it are left for UnmountUnder. Stopping a stopped host is a
// no-op.
func (l *Lab) StopHost(h *Host) error {
	l.mu.Lock()
	for i, n := range l.nss {
		if n.Name == h.Name {
			l.nss = append(l.nss[:i], l.nss[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	return errors.Join(deleteNS(h.Name), removeCgroups(h.CgroupRoot))
}

// UnmountUnder detaches every mount point at or below dir (deepest first),
// as left by container runtimes whose processes were killed; it reads the
// process's mount table, so it sees mounts made by any process of the same
// mount namespace.
func UnmountUnder(dir string) error {
	dir = filepath.Clean(dir)
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMount(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	// Deepest first; a path mounted twice is detached twice.
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// GatewayIP is the switch's own address once SetDefaultGateway ran.
var GatewayIP = netip.MustParseAddr("172.31.250.1")

// SetDefaultGateway makes the lab look like a LAN with a router: the switch
// gets GatewayIP and every host a default route through it, as real
// machines have (a node's own connections to a Service's cluster IP are
// routed before they are translated, so they need one). The switch
// forwards nothing further, so nothing leaves the lab.
func (l *Lab) SetDefaultGateway() error {
	swh, err := l.Switch.Handle()
	if err != nil {
		return err
	}
	defer swh.Close()
	br, err := swh.LinkByName(switchName)
	if err != nil {
		return fmt.Errorf("find switch bridge: %w", err)
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: GatewayIP.AsSlice(), Mask: net.CIDRMask(Subnet.Bits(), 32)}}
	if err := swh.AddrAdd(br, gw); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("switch address %s: %w", GatewayIP, err)
	}
	for _, h := range append(append([]*Host(nil), l.Hosts...), l.Client) {
		hh, err := h.Handle()
		if err != nil {
			return err
		}
		eth, err := hh.LinkByName(h.Iface)
		if err == nil {
			err = hh.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: GatewayIP.AsSlice()})
		}
		hh.Close()
		if err != nil {
			return fmt.Errorf("%s: default route via %s: %w", h.Role, GatewayIP, err)
		}
	}
	return nil
}
