package podnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The fast path: with the vxlan backend, two small eBPF programs on the
// node's ingress hooks forward pod traffic between pods and the overlay
// themselves, the way the kernel would, minus the hops that make pod-to-pod
// traffic dearer than node-to-node traffic.
//
//   - orch_fwd, a tc filter on the host end of every pod veth and a tcx
//     program on the VXLAN device: an IPv4 TCP or UDP packet that the
//     kernel's FIB routes to another pod's veth is delivered straight into
//     that pod's namespace (bpf_redirect_peer, no veth queue); one routed
//     to the VXLAN device is encapsulated here (outer IPv4/UDP/VXLAN
//     headers for the peer node that owns the VTEP MAC the FIB resolved)
//     and sent out of the uplink, or, when the peer or the uplink's next
//     hop is not known yet, handed to the VXLAN device as the kernel would.
//   - orch_decap, a tcx program on the uplink: a VXLAN datagram from a
//     peer node (not from anyone else: a firewall that limits UDP 8472 to
//     the nodes keeps its say) whose inner packet goes to one of this
//     node's pods loses its outer headers here and is delivered into the
//     pod's namespace.
//
// Both lower the TTL and write the next hop's MAC addresses from the FIB
// lookup (bpf_fib_lookup reads the same routes and neighbour entries the
// normal path does). Skipped on both nodes, per packet: the IP input,
// routing, forwarding and netfilter hooks of the node's stack for the pod
// packet and for the tunnel datagram, the VXLAN device's transmit and
// receive (its UDP socket and GRO cells) and the veth queue into the pod.
//
// Left to the normal path: everything not IPv4 TCP/UDP, IP options,
// fragments, TTL <= 1, ECN congestion marks on the tunnel, any destination
// the FIB does not route through the VXLAN device or to a pod veth (the
// node itself, Service addresses, the outside world: these meet Service NAT
// and masquerade as before), and every flow conntrack knows. Flows that
// conntrack tracks are the ones NAT applies to (Service DNAT, hostPorts,
// NodePorts, masquerade): each begins on the normal path, to an address that
// is not a pod's, and its replies are found by the lookup, so they keep all
// of netfilter. A pod-to-pod flow that begins on the fast path is tracked on
// neither node; one that conntrack picked up while the programs were not
// attached (before they first were, or while the agent restarts) stays on
// the normal path until it ends. The node's own firewall rules for
// forwarded traffic do not see fast-path packets, and a capture on the VXLAN
// device sees only what takes the normal path (capture on the uplink, udp
// port 8472, instead).
//
// The programs are generated here with cilium/ebpf's assembler (no C
// toolchain, no object file). They need tcx (Linux 6.6), bpf_redirect_peer
// and the conntrack kfuncs; where the kernel lacks any of it, the network
// runs on the normal path, as it does with Config.NoFastPath.

// fastPathParams is what the programs are generated for.
type fastPathParams struct {
	vxlan, uplink int     // link indexes in the node's namespace
	nodeIP        [4]byte // the tunnel's local end
	port          uint16  // VXLAN UDP port
	vni           uint32
	vtepMAC       [6]byte // this node's VXLAN device
	cluster       [4]byte // the cluster CIDR's network address
	clusterMask   [4]byte
	ctLookup      uint32 // BTF ids of bpf_skb_ct_lookup and bpf_ct_release
	ctRelease     uint32
}

// fastPath is the loaded programs, the maps they read and their
// attachments.
type fastPath struct {
	fwd   *ebpf.Program
	decap *ebpf.Program
	pods  *ebpf.Map // ifindex (u32) -> 1: host ends of pod veths
	vteps *ebpf.Map // peer VTEP MAC (6 bytes + 2 zero) -> peer node IP
	nodes *ebpf.Map // peer node IP -> 1: whose datagrams orch_decap takes
	nh    *netlink.Handle

	mu    sync.Mutex
	links []link.Link    // tcx links of the VXLAN device and the uplink
	veths map[string]int // pod veth name -> ifindex
}

// loadFastPath creates the maps and loads the programs. nh is a netlink
// handle in the node's namespace. The maps allocate per entry (a
// preallocated hash map of 64Ki entries would hold megabytes of kernel
// memory for the few pods and peers a node has).
func loadFastPath(p fastPathParams, nh *netlink.Handle) (_ *fastPath, err error) {
	f := &fastPath{nh: nh, veths: map[string]int{}}
	defer func() {
		if err != nil {
			_ = f.Close()
		}
	}()
	hash := func(name string, key, value uint32) (*ebpf.Map, error) {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: key, ValueSize: value,
			MaxEntries: 1 << 16, Flags: unix.BPF_F_NO_PREALLOC})
		if err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
		return m, nil
	}
	if f.pods, err = hash("orch_pods", 4, 1); err != nil {
		return nil, err
	}
	if f.vteps, err = hash("orch_vteps", 8, 4); err != nil {
		return nil, err
	}
	if f.nodes, err = hash("orch_nodes", 4, 1); err != nil {
		return nil, err
	}
	load := func(name string, insns asm.Instructions) (*ebpf.Program, error) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: name, Type: ebpf.SchedCLS, License: "Dual MIT/GPL", Instructions: insns,
		})
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", name, err)
		}
		return prog, nil
	}
	if f.fwd, err = load(fwdName, fwdProgram(p, f.pods.FD(), f.vteps.FD())); err != nil {
		return nil, err
	}
	if f.decap, err = load("orch_decap", decapProgram(p, f.pods.FD(), f.nodes.FD())); err != nil {
		return nil, err
	}
	return f, nil
}

// fwdName names orch_fwd, also as a pod veth's tc filter.
const fwdName = "orch_fwd"

// attachDevice puts prog on ingress of the VXLAN device or the uplink
// through tcx: the attachment ends with the process. It runs in the calling
// thread's network namespace.
func (f *fastPath) attachDevice(name string, ifindex int, prog *ebpf.Program) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("fast path: attach to %s: %w", name, err)
	}
	f.links = append(f.links, l)
	return nil
}

// attachPod adds a pod's host veth to the pod set and puts orch_fwd on its
// ingress as a tc filter (a clsact qdisc and a direct-action bpf filter,
// replacing one an earlier run of the agent left). Unlike tcx, whose every
// attachment waits for an RCU grace period (10-20 ms here, in each pod's
// start), a filter goes on in well under a millisecond; it stays when the
// agent stops, so the pod's traffic keeps the fast path meanwhile, and goes
// with the veth.
func (f *fastPath) attachPod(name string, ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.pods.Put(uint32(ifindex), uint8(1)); err != nil {
		return fmt.Errorf("fast path: add pod veth %s: %w", name, err)
	}
	f.veths[name] = ifindex
	if err := addClsact(f.nh, ifindex); err != nil {
		return fmt.Errorf("fast path: %s: %w", name, err)
	}
	if err := f.nh.FilterReplace(podFilter(ifindex, f.fwd.FD())); err != nil {
		return fmt.Errorf("fast path: filter on %s: %w", name, err)
	}
	return nil
}

// addClsact gives the link a clsact qdisc unless it has one.
func addClsact(nh *netlink.Handle, ifindex int) error {
	q := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := nh.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	return nil
}

// podFilter is orch_fwd's filter on a pod veth (fd 0 to name it for
// deletion).
func podFilter(ifindex, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd: fd, Name: fwdName, DirectAction: true,
	}
}

// removePodFilter takes orch_fwd's filter off a pod veth (the fast path
// turned off).
func removePodFilter(nh *netlink.Handle, ifindex int) error {
	filters, err := nh.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("filters of link %d: %w", ifindex, err)
	}
	for _, fl := range filters {
		if bf, ok := fl.(*netlink.BpfFilter); ok && bf.Name == fwdName {
			if err := nh.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove filter from link %d: %w", ifindex, err)
			}
		}
	}
	return nil
}

// detach takes a pod veth out of the pod set (its filter goes with it).
func (f *fastPath) detach(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ifindex, ok := f.veths[name]
	if !ok {
		return nil
	}
	delete(f.veths, name)
	if err := f.pods.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("fast path: remove pod veth %s: %w", name, err)
	}
	return nil
}

// setPeers makes the VTEP and node maps hold exactly these peers.
func (f *fastPath) setPeers(peers []Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vteps := map[[8]byte][4]byte{}
	nodes := map[[4]byte]uint8{}
	for _, p := range peers {
		if len(p.VTEPMAC) == 6 && p.NodeIP.Is4() {
			var k [8]byte
			copy(k[:], p.VTEPMAC)
			vteps[k] = p.NodeIP.As4()
			nodes[p.NodeIP.As4()] = 1
		}
	}
	return errors.Join(syncMap(f.vteps, "VTEP", vteps), syncMap(f.nodes, "node", nodes))
}

// syncMap makes m hold exactly want.
func syncMap[K, V comparable](m *ebpf.Map, what string, want map[K]V) error {
	var errs []error
	var k K
	var v V
	var stale []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if w, ok := want[k]; !ok || w != v {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("fast path: read %s map: %w", what, err))
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("fast path: remove %s %v: %w", what, k, err))
		}
	}
	for k, v := range want {
		if err := m.Put(k, v); err != nil {
			errs = append(errs, fmt.Errorf("fast path: add %s %v: %w", what, k, err))
		}
	}
	return errors.Join(errs...)
}

// Close detaches the programs from the VXLAN device and the uplink and
// releases the process's hold on them; pod veths' filters keep theirs.
func (f *fastPath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	f.links = nil
	for _, p := range []*ebpf.Program{f.fwd, f.decap} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, m := range []*ebpf.Map{f.pods, f.vteps, f.nodes} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Stack slots of the programs (offsets from the frame pointer).
const (
	fpHdr   = -24  // IPv4 header (20 bytes) + the L4 ports
	fpFib   = -88  // struct bpf_fib_lookup (64 bytes)
	fpTuple = -104 // struct bpf_sock_tuple, ipv4 (12 bytes)
	fpOpts  = -120 // struct bpf_ct_opts (12 bytes)
	fpKey   = -128 // map key: ifindex
	fpTun   = -184 // outer IPv4, UDP, VXLAN and inner Ethernet headers (50 bytes)
	fpVTEP  = -192 // map key: VTEP MAC
	fpFib2  = -256 // struct bpf_fib_lookup for the tunnel's route
)

// Offsets in struct __sk_buff, struct bpf_fib_lookup and the headers.
const (
	skbLen      = 0
	skbProtocol = 16
	skbIfindex  = 40

	fibFamily  = 0
	fibL4Proto = 1
	fibSport   = 2
	fibDport   = 4
	fibIfindex = 8
	fibTOS     = 12
	fibSrc     = 16
	fibDst     = 32
	fibSMAC    = 52
	fibDMAC    = 58
	fibSize    = 64

	ethLen  = 14
	ipTOS   = 1
	ipFrag  = 6
	ipTTL   = 8
	ipProto = 9
	ipCsum  = 10
	ipSrc   = 12
	ipDst   = 16
	l4Ports = 20

	tunUDP   = 20 // in the tunnel headers (fpTun)
	tunVXLAN = 28
	tunEth   = 36
)

// Return codes, helper flags, protocol numbers.
const (
	tcxNext    = -1 // TCX_NEXT: on to the normal path
	tcActShot  = 2
	afInet     = 2
	ipprotoTCP = 6
	ipprotoUDP = 17

	adjRoomMAC = 1 // BPF_ADJ_ROOM_MAC
	// bpf_skb_adjust_room flags for the encapsulation: BPF_F_ADJ_ROOM_FIXED_GSO
	// (the pod's MSS already leaves room for the tunnel) | ENCAP_L3_IPV4 |
	// ENCAP_L4_UDP | ENCAP_L2_ETH | ENCAP_L2(14).
	adjRoomEncap = adjRoomFixed | 1<<1 | 1<<4 | 1<<6 | ethLen<<56
	adjRoomFixed = 1 // BPF_F_ADJ_ROOM_FIXED_GSO
)

// Labels.
const (
	lNext  = "next"
	lDrop  = "drop"
	lL4    = "l4"
	lCT    = "ct"
	lFast  = "fast"
	lPlain = "plain"
)

// be16 is v in network order as the program loads it from memory.
func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// word is four bytes of memory as the program loads them as a word.
// Compare it with Imm32 jumps: a 64-bit jump sign-extends the immediate,
// the loaded word is zero-extended.
func word(b ...byte) int32 { return int32(binary.NativeEndian.Uint32(b)) }

// labelled is ins with the label, if any.
func labelled(ins asm.Instruction, label string) asm.Instruction {
	if label == "" {
		return ins
	}
	return ins.WithSymbol(label)
}

// kfunc calls the kernel function with BTF id id.
func kfunc(id uint32) asm.Instruction {
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
}

// copyStack copies n bytes (a multiple of 2) between 2-aligned stack slots.
func copyStack(to, from int16, n int16) asm.Instructions {
	var in asm.Instructions
	for i := int16(0); i < n; i += 2 {
		in = append(in, asm.LoadMem(asm.R2, asm.RFP, from+i, asm.Half), asm.StoreMem(asm.RFP, to+i, asm.R2, asm.Half))
	}
	return in
}

// zeroStack zeroes n bytes (a multiple of 8) of the frame at at.
func zeroStack(at, n int16) asm.Instructions {
	var in asm.Instructions
	for off := int16(0); off < n; off += 8 {
		in = append(in, asm.StoreImm(asm.RFP, at+off, 0, asm.DWord))
	}
	return in
}

// fibLookup calls bpf_fib_lookup with the struct at slot (flags 0: the
// node's routing rules, an MTU check) and goes to onFail unless it found
// a forward with a resolved neighbour.
func fibLookup(slot int16, onFail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(slot)),
		asm.Mov.Imm(asm.R3, fibSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnFibLookup.Call(),
		asm.JNE.Imm(asm.R0, 0, onFail), // BPF_FIB_LKUP_RET_SUCCESS only
	}
}

// mapLookup looks up the key at slot in the map fd: R0 the value or 0.
func mapLookup(fd int, key int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
	}
}

// storeBytes writes n bytes from the stack at from into the packet at off;
// a failure drops the packet (it may be half rewritten).
func storeBytes(off int32, from int16, n int32) asm.Instructions {
	return skbBytes(asm.FnSkbStoreBytes, off, from, n, lDrop)
}

// loadBytes copies n bytes of the packet at off onto the stack at to, or
// leaves the packet to the normal path.
func loadBytes(off int32, to int16, n int32) asm.Instructions {
	return skbBytes(asm.FnSkbLoadBytes, off, to, n, lNext)
}

// skbBytes calls bpf_skb_load_bytes or bpf_skb_store_bytes (flags 0) for
// n bytes at off in the packet and stack in the frame.
func skbBytes(fn asm.BuiltinFunc, off int32, stack int16, n int32, onFail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, off),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(stack)),
		asm.Mov.Imm(asm.R4, n),
		asm.Mov.Imm(asm.R5, 0), // store's flags; load has no fifth argument
		fn.Call(),
		asm.JNE.Imm(asm.R0, 0, onFail),
	}
}

// Registers the programs keep across helper calls: R6 the skb, R7 the L4
// protocol (later the peer's node IP), R8 the output ifindex, R9 1 when
// that is a pod veth.

// fwdProgram is orch_fwd.
func fwdProgram(p fastPathParams, podsFD, vtepsFD int) asm.Instructions {
	in := ipv4Frame()
	in = append(in, innerChecks(p, ethLen)...)
	in = append(in, asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word).WithSymbol(lL4))
	in = append(in, fibAndTarget(podsFD)...)
	in = append(in, asm.JNE.Imm(asm.R8, int32(p.vxlan), lNext))
	in = append(in, conntrack(p)...)
	in = append(in, lowerTTL(lFast, lNext)...) // nothing changed if it fails
	in = append(in, encapsulate(p, vtepsFD)...)
	in = append(in, deliver(lPlain)...)
	return in
}

// decapProgram is orch_decap.
func decapProgram(p fastPathParams, podsFD, nodesFD int) asm.Instructions {
	tun := func(off int16) int16 { return fpTun + off }
	vni := p.vni
	in := ipv4Frame()
	// Outer IPv4 without options or fragments and no congestion mark, UDP
	// to this node's VXLAN port, the VNI, an inner IPv4 frame for this
	// node's VXLAN device.
	in = append(in, loadBytes(ethLen, fpTun, VXLANOverhead)...)
	in = append(in, plainIPv4(fpTun)...)
	in = append(in,
		asm.LoadMem(asm.R2, asm.RFP, tun(ipTOS), asm.Byte),
		asm.And.Imm(asm.R2, 3),
		asm.JEq.Imm(asm.R2, 3, lNext), // CE: the kernel carries it inside
		asm.LoadMem(asm.R2, asm.RFP, tun(ipProto), asm.Byte),
		asm.JNE.Imm(asm.R2, ipprotoUDP, lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(ipDst), asm.Word),
		asm.JNE.Imm32(asm.R2, word(p.nodeIP[:]...), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunUDP+2), asm.Half),
		asm.JNE.Imm(asm.R2, be16(p.port), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunVXLAN), asm.Word),
		asm.JNE.Imm32(asm.R2, word(0x08, 0, 0, 0), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunVXLAN+4), asm.Word),
		asm.JNE.Imm32(asm.R2, word(byte(vni>>16), byte(vni>>8), byte(vni), 0), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunEth), asm.Word),
		asm.JNE.Imm32(asm.R2, word(p.vtepMAC[0:4]...), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunEth+4), asm.Half),
		asm.JNE.Imm(asm.R2, int32(binary.NativeEndian.Uint16(p.vtepMAC[4:6])), lNext),
		asm.LoadMem(asm.R2, asm.RFP, tun(tunEth+12), asm.Half),
		asm.JNE.Imm(asm.R2, be16(0x0800), lNext),
		// From a peer node: anyone else's datagrams meet the node's
		// firewall on the normal path, as they would without this.
		asm.LoadMem(asm.R2, asm.RFP, tun(ipSrc), asm.Word),
		asm.StoreMem(asm.RFP, fpKey, asm.R2, asm.Word),
	)
	in = append(in, mapLookup(nodesFD, fpKey)...)
	in = append(in, asm.JEq.Imm(asm.R0, 0, lNext))
	in = append(in, innerChecks(p, ethLen+VXLANOverhead)...)
	// Routed as the VXLAN device would pass it on, and only to a pod.
	in = append(in, asm.Mov.Imm(asm.R2, int32(p.vxlan)).WithSymbol(lL4))
	in = append(in, fibAndTarget(podsFD)...)
	in = append(in, asm.Ja.Label(lNext))
	in = append(in, conntrack(p)...)
	in = append(in,
		// Off with the outer headers: the inner IPv4 header follows the
		// Ethernet header, whose addresses deliver() writes. The GSO size
		// stays the inner packet's.
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol(lFast),
		asm.Mov.Imm(asm.R2, -VXLANOverhead),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.Mov.Imm(asm.R4, adjRoomFixed),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, lNext), // unchanged
	)
	in = append(in, lowerTTL("", lDrop)...) // decapsulated already
	in = append(in, deliver("")...)
	return in
}

// ipv4Frame starts a program: R6 the skb, anything but IPv4 to the normal
// path.
func ipv4Frame() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbProtocol, asm.Word),
		asm.JNE.Imm(asm.R2, be16(0x0800), lNext),
	}
}

// plainIPv4 leaves the IPv4 header copied to the stack at at to the normal
// path unless it is version 4 without options and not a fragment.
func plainIPv4(at int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.RFP, at, asm.Byte),
		asm.JNE.Imm(asm.R2, 0x45, lNext), // version 4, no options
		asm.LoadMem(asm.R2, asm.RFP, at+ipFrag, asm.Half),
		asm.And.Imm(asm.R2, be16(0x3fff)), // more fragments, fragment offset
		asm.JNE.Imm(asm.R2, 0, lNext),
	}
}

// innerChecks copies the IPv4 header at off and the ports after it to
// fpHdr and leaves all but unfragmented IPv4 TCP/UDP without options and
// with TTL > 1 from an address of the cluster CIDR (a pod, or a node's
// VXLAN or gateway address, whose replies come back the same way) to the
// normal path. R7 = the protocol. A packet from elsewhere (a node's own
// address, say, through a Service) may be answered by a route that
// bypasses the tunnel, and the answers would meet a conntrack that never
// saw the flow begin: those keep the normal path both ways.
func innerChecks(p fastPathParams, off int32) asm.Instructions {
	hdr := func(o int16) int16 { return fpHdr + o }
	in := loadBytes(off, fpHdr, 24)
	in = append(in, plainIPv4(fpHdr)...)
	return append(in,
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipTTL), asm.Byte),
		asm.JLE.Imm(asm.R2, 1, lNext),
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipSrc), asm.Word),
		asm.And.Imm32(asm.R2, word(p.clusterMask[:]...)),
		asm.JNE.Imm32(asm.R2, word(p.cluster[:]...), lNext),
		asm.LoadMem(asm.R7, asm.RFP, hdr(ipProto), asm.Byte),
		asm.JEq.Imm(asm.R7, ipprotoTCP, lL4),
		asm.JNE.Imm(asm.R7, ipprotoUDP, lNext),
	)
}

// fibAndTarget looks the packet up in the FIB as arriving on ifindex R2
// (set by the caller's instruction labelled lL4, where innerChecks goes on)
// and sets R8 to the output ifindex; a pod veth sets R9 = 1 and jumps to
// the conntrack check. Anything but a forward out of another link goes to
// the normal path; what else falls through is up to the caller.
func fibAndTarget(podsFD int) asm.Instructions {
	hdr := func(o int16) int16 { return fpHdr + o }
	fib := func(o int16) int16 { return fpFib + o }
	in := zeroStack(fpFib, fibSize) // R2 untouched
	in = append(in,
		asm.StoreMem(asm.RFP, fib(fibIfindex), asm.R2, asm.Word),
		asm.StoreImm(asm.RFP, fib(fibFamily), afInet, asm.Byte),
		asm.StoreMem(asm.RFP, fib(fibL4Proto), asm.R7, asm.Byte),
		asm.LoadMem(asm.R2, asm.RFP, hdr(l4Ports), asm.Half),
		asm.StoreMem(asm.RFP, fib(fibSport), asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.RFP, hdr(l4Ports+2), asm.Half),
		asm.StoreMem(asm.RFP, fib(fibDport), asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipTOS), asm.Byte),
		asm.StoreMem(asm.RFP, fib(fibTOS), asm.R2, asm.Byte),
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipSrc), asm.Word),
		asm.StoreMem(asm.RFP, fib(fibSrc), asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipDst), asm.Word),
		asm.StoreMem(asm.RFP, fib(fibDst), asm.R2, asm.Word),
	)
	in = append(in, fibLookup(fpFib, lNext)...)
	in = append(in,
		asm.LoadMem(asm.R8, asm.RFP, fib(fibIfindex), asm.Word),
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
		asm.JEq.Reg(asm.R8, asm.R2, lNext), // back out where it came in
		asm.StoreMem(asm.RFP, fpKey, asm.R8, asm.Word),
	)
	in = append(in, mapLookup(podsFD, fpKey)...)
	return append(in,
		asm.Mov.Imm(asm.R9, 1),
		asm.JNE.Imm(asm.R0, 0, lCT),
		asm.Mov.Imm(asm.R9, 0),
	)
}

// conntrack (label lCT) leaves every flow conntrack knows to the normal
// path and goes on at lFast.
func conntrack(p fastPathParams) asm.Instructions {
	hdr := func(o int16) int16 { return fpHdr + o }
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipSrc), asm.Word).WithSymbol(lCT),
		asm.StoreMem(asm.RFP, fpTuple, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, hdr(ipDst), asm.Word),
		asm.StoreMem(asm.RFP, fpTuple+4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, hdr(l4Ports), asm.Word),
		asm.StoreMem(asm.RFP, fpTuple+8, asm.R2, asm.Word),
		asm.StoreImm(asm.RFP, fpOpts, -1, asm.Word), // netns_id: BPF_F_CURRENT_NETNS
		asm.StoreImm(asm.RFP, fpOpts+4, 0, asm.Word),
		asm.StoreImm(asm.RFP, fpOpts+8, 0, asm.Word),
		asm.StoreMem(asm.RFP, fpOpts+8, asm.R7, asm.Byte), // l4proto
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpTuple),
		asm.Mov.Imm(asm.R3, 12),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, fpOpts),
		asm.Mov.Imm(asm.R5, 12),
		kfunc(p.ctLookup),
		asm.JEq.Imm(asm.R0, 0, lFast),
		asm.Mov.Reg(asm.R1, asm.R0),
		kfunc(p.ctRelease),
		asm.Ja.Label(lNext),
	}
}

// lowerTTL (at label) decrements the TTL of the IPv4 header at ethLen
// and fixes its checksum; a failed checksum update goes to onFail.
func lowerTTL(label, onFail string) asm.Instructions {
	hdr := func(o int16) int16 { return fpHdr + o }
	return asm.Instructions{
		labelled(asm.LoadMem(asm.R3, asm.RFP, hdr(ipTTL), asm.Half), label), // TTL and protocol
		asm.Mov.Reg(asm.R4, asm.R3),
		asm.Sub.Imm(asm.R4, be16(0x0100)),
		asm.StoreMem(asm.RFP, hdr(ipTTL), asm.R4, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ethLen+ipCsum),
		asm.Mov.Imm(asm.R5, 2),
		asm.FnL3CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, onFail),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ethLen+ipTTL),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(hdr(ipTTL))),
		asm.Mov.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, lDrop),
	}
}

// encapsulate sends a packet for the VXLAN device (R9 == 0) out of the
// uplink with the tunnel headers on, when the peer that owns the VTEP MAC
// the FIB resolved is known and the uplink's next hop to it is resolved;
// otherwise it goes to lPlain (deliver) with R8 the VXLAN device.
func encapsulate(p fastPathParams, vtepsFD int) asm.Instructions {
	fib := func(o int16) int16 { return fpFib + o }
	fib2 := func(o int16) int16 { return fpFib2 + o }
	tun := func(o int16) int16 { return fpTun + o }
	in := asm.Instructions{
		asm.JNE.Imm(asm.R9, 0, lPlain),
		// The outer IPv4 length must fit its 16 bits (a UDP GSO packet
		// of 64 KiB would not): the VXLAN device takes those.
		asm.LoadMem(asm.R2, asm.R6, skbLen, asm.Word),
		asm.JGT.Imm(asm.R2, 0xffff+ethLen-VXLANOverhead, lPlain),
	}
	in = append(in, copyStack(fpVTEP, fib(fibDMAC), 6)...)
	in = append(in,
		asm.StoreImm(asm.RFP, fpVTEP+6, 0, asm.Half),
	)
	in = append(in, mapLookup(vtepsFD, fpVTEP)...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, lPlain),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word), // the peer's node IP
	)
	// The tunnel's route: node IP to the peer's, out of the uplink.
	in = append(in, zeroStack(fpFib2, fibSize)...)
	in = append(in,
		asm.StoreImm(asm.RFP, fib2(fibFamily), afInet, asm.Byte),
		asm.StoreImm(asm.RFP, fib2(fibL4Proto), ipprotoUDP, asm.Byte),
		asm.StoreImm(asm.RFP, fib2(fibIfindex), int64(p.uplink), asm.Word),
		asm.StoreImm(asm.RFP, fib2(fibSrc), int64(word(p.nodeIP[:]...)), asm.Word),
		asm.StoreMem(asm.RFP, fib2(fibDst), asm.R7, asm.Word),
	)
	in = append(in, fibLookup(fpFib2, lPlain)...)
	in = append(in,
		asm.LoadMem(asm.R2, asm.RFP, fib2(fibIfindex), asm.Word),
		asm.JNE.Imm(asm.R2, int32(p.uplink), lPlain),
	)
	// The tunnel headers, on the stack: inner Ethernet (the VXLAN device's
	// addresses from the first lookup), VXLAN, then UDP and outer IPv4.
	in = append(in, copyStack(tun(tunEth), fib(fibDMAC), 6)...)
	in = append(in, copyStack(tun(tunEth+6), fib(fibSMAC), 6)...)
	vni := p.vni
	in = append(in,
		asm.StoreImm(asm.RFP, tun(tunEth+12), int64(be16(0x0800)), asm.Half),
		asm.StoreImm(asm.RFP, tun(tunVXLAN), int64(word(0x08, 0, 0, 0)), asm.Word),
		asm.StoreImm(asm.RFP, tun(tunVXLAN+4), int64(word(byte(vni>>16), byte(vni>>8), byte(vni), 0)), asm.Word),
		// Outer TOS: the inner packet's ECN capability (ECT(0) for CE),
		// as the kernel's VXLAN device does.
		asm.LoadMem(asm.R2, asm.RFP, fpHdr+ipTOS, asm.Byte),
		asm.And.Imm(asm.R2, 3),
		asm.JNE.Imm(asm.R2, 3, "tos"),
		asm.Mov.Imm(asm.R2, 2),
		asm.Or.Imm(asm.R2, 0x4500).WithSymbol("tos"), // version, IHL
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, tun(0), asm.R2, asm.Half),
		asm.StoreImm(asm.RFP, tun(ipTTL), int64(be16(64<<8|ipprotoUDP)), asm.Half),
		asm.StoreImm(asm.RFP, tun(ipCsum), 0, asm.Half),
		asm.StoreImm(asm.RFP, tun(ipSrc), int64(word(p.nodeIP[:]...)), asm.Word),
		asm.StoreMem(asm.RFP, tun(ipDst), asm.R7, asm.Word),
		// A random IP id (the datagram may be fragmented on the way: no
		// DF, as the kernel's VXLAN device by default), the source port
		// from the flow hash (the kernel spreads flows over source ports
		// the same way), no UDP checksum.
		asm.FnGetPrandomU32.Call(),
		asm.StoreMem(asm.RFP, tun(4), asm.R0, asm.Half),
		asm.StoreImm(asm.RFP, tun(ipFrag), 0, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetHashRecalc.Call(),
		asm.And.Imm(asm.R0, 0x3fff),
		asm.Or.Imm(asm.R0, 0xc000),
		asm.HostTo(asm.BE, asm.R0, asm.Half),
		asm.StoreMem(asm.RFP, tun(tunUDP), asm.R0, asm.Half),
		asm.StoreImm(asm.RFP, tun(tunUDP+2), int64(be16(p.port)), asm.Half),
		asm.StoreImm(asm.RFP, tun(tunUDP+6), 0, asm.Half),
		// Room for them after the Ethernet header.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, VXLANOverhead),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.LoadImm(asm.R4, adjRoomEncap, asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, lPlain), // unchanged
		// Lengths.
		asm.LoadMem(asm.R2, asm.R6, skbLen, asm.Word),
		asm.Add.Imm(asm.R2, -ethLen),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, tun(2), asm.R2, asm.Half),
		asm.Add.Imm(asm.R3, -tunUDP),
		asm.HostTo(asm.BE, asm.R3, asm.Half),
		asm.StoreMem(asm.RFP, tun(tunUDP+4), asm.R3, asm.Half),
		// Outer header checksum.
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, fpTun),
		asm.Mov.Imm(asm.R4, 20),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.RSh.Imm(asm.R1, 16),
		asm.And.Imm(asm.R0, 0xffff),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.RSh.Imm(asm.R1, 16),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Xor.Imm(asm.R0, 0xffff),
		asm.StoreMem(asm.RFP, tun(ipCsum), asm.R0, asm.Half),
	)
	// Into the packet, with the uplink's next hop's addresses, and out.
	in = append(in, storeBytes(ethLen, fpTun, VXLANOverhead)...)
	in = append(in, copyStack(fib(fibDMAC), fib2(fibDMAC), 6)...)
	in = append(in, copyStack(fib(fibSMAC), fib2(fibSMAC), 6)...)
	return append(in, asm.Mov.Imm(asm.R8, int32(p.uplink)))
}

// deliver (at label) writes the next hop's MAC addresses (fpFib's) and
// redirects to R8: into the pod's namespace when R9 is 1, out of the link
// otherwise.
func deliver(label string) asm.Instructions {
	in := storeBytes(0, fpFib+fibDMAC, 6)
	in[0] = labelled(in[0], label)
	in = append(in, storeBytes(6, fpFib+fibSMAC, 6)...)
	return append(in,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Imm(asm.R2, 0),
		asm.JEq.Imm(asm.R9, 0, "out"),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.FnRedirect.Call().WithSymbol("out"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol(lNext),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol(lDrop),
		asm.Return(),
	)
}
