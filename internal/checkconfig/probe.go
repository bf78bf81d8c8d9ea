package checkconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// probeResult is what the kernel accepted in a scratch network namespace.
type probeResult struct {
	links     map[string]error // by link kind
	nftErr    error            // creating a table at all
	nft       map[string]error // by feature
	ipForward error            // setting net.ipv4.ip_forward there
}

// runProbes creates a network namespace that nothing else uses, tries in it
// what orch does on a node (links, nftables rules, the forwarding sysctl),
// and lets it go: the namespace and everything in it vanish when its last
// handle closes. Nothing is sent and nothing outside it changes.
func runProbes() (*probeResult, error) {
	type outcome struct {
		p   *probeResult
		err error
	}
	ch := make(chan outcome, 1)
	go func() {
		// The thread enters the new namespace to create it and set the
		// sysctl there. If it cannot return to the original namespace it
		// stays locked, and Go ends it with this goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- outcome{err: fmt.Errorf("open the current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New() // unshare(CLONE_NEWNET) on this thread
		if err != nil {
			if cur, gerr := netns.Get(); gerr == nil && cur.Equal(orig) {
				runtime.UnlockOSThread()
				cur.Close()
			}
			ch <- outcome{err: fmt.Errorf("create a network namespace: %w", err)}
			return
		}
		defer ns.Close()
		p := &probeResult{}
		p.ipForward = probeForward(ns)
		if err := netns.Set(orig); err != nil {
			ch <- outcome{err: fmt.Errorf("return to the original network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		p.links = probeLinks(ns)
		p.nft, p.nftErr = probeNftables(ns)
		ch <- outcome{p: p}
	}()
	o := <-ch
	return o.p, o.err
}

// probeForward writes 1 to net.ipv4.ip_forward and reads it back. It runs
// on the thread that is in ns: /proc/sys/net resolves to the opening
// thread's namespace. It checks that first, so the host's value is never
// written.
func probeForward(ns netns.NsHandle) error {
	var want, have unix.Stat_t
	if err := unix.Fstat(int(ns), &want); err != nil {
		return err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &have); err != nil {
		return err
	}
	if want.Ino != have.Ino || want.Dev != have.Dev {
		return errors.New("not in the scratch namespace; not writing")
	}
	const p = "/proc/sys/net/ipv4/ip_forward"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "1" {
		return fmt.Errorf("wrote 1, read back %q", strings.TrimSpace(string(b)))
	}
	return nil
}

func probeLinks(ns netns.NsHandle) map[string]error {
	out := map[string]error{}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		for _, k := range []string{"veth", "bridge", "vxlan"} {
			out[k] = fmt.Errorf("netlink: %w", err)
		}
		return out
	}
	defer h.Close()
	out["bridge"] = h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "chk-br"}})
	out["veth"] = h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "chk-veth0"}, PeerName: "chk-veth1"})
	out["vxlan"] = h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "chk-vxlan"}, VxlanId: 1, Port: 8472})
	return out
}

// probeNftables adds, one transaction each so that a refusal names its
// feature, the kinds of rules netproxy and podnet write.
func probeNftables(ns netns.NsHandle) (map[string]error, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer conn.CloseLasting()
	t := conn.AddTable(&nftables.Table{Name: "orch-check", Family: nftables.TableFamilyIPv4})
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("create a table: %w", err)
	}
	policy := nftables.ChainPolicyAccept
	filter := conn.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("create a filter chain: %w", err)
	}
	out := map[string]error{}
	var pre, post *nftables.Chain
	conn.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	conn.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	if out["nat"] = conn.Flush(); out["nat"] == nil {
		pre = &nftables.Chain{Name: "prerouting", Table: t}
		post = &nftables.Chain{Name: "postrouting", Table: t}
	}
	rule := func(feature string, ch *nftables.Chain, exprs ...expr.Any) {
		if ch == nil {
			out[feature] = errors.New("no nat chain to try it in")
			return
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
		out[feature] = conn.Flush()
	}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	rule("fib", filter,
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		accept)
	rule("numgen", filter,
		&expr.Numgen{Register: 1, Modulus: 2, Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept)
	rule("ct", filter,
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept)
	rule("reject", filter,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	rule("dnat", pre,
		&expr.Immediate{Register: 1, Data: net.IPv4(192, 0, 2, 1).To4()},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, Specified: true})
	rule("masq", post, &expr.Masq{FullyRandom: true})

	// A verdict map keyed by daddr . l4proto . dport, as netproxy's.
	key, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	if err != nil {
		out["vmap"] = err
		return out, nil
	}
	set := &nftables.Set{Table: t, Name: "services", IsMap: true, KeyType: key, DataType: nftables.TypeVerdict, ID: 1}
	if err := conn.AddSet(set, nil); err != nil {
		out["vmap"] = err
		return out, nil
	}
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, DestRegister: 0, IsDestRegSet: true},
	}})
	out["vmap"] = conn.Flush()
	return out, nil
}
