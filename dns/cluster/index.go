// Package cluster is orch's CoreDNS plugin for cluster names: it answers the
// records of the Kubernetes DNS specification (Services, headless endpoints,
// SRV for named ports, PTR, ExternalName, pod A records) and node names from
// a lean in-memory index fed by client-go informers. The index keeps only the
// fields DNS needs, never whole API objects.
package cluster

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Port is a named Service or EndpointSlice port.
type Port struct {
	Name  string // DNS label of the port, "" when unnamed
	Proto string // "tcp", "udp" or "sctp"
	Port  uint16
}

// Endpoint is one ready address of a Service's EndpointSlice.
type Endpoint struct {
	Addr     netip.Addr
	Hostname string // the pod's hostname when it set hostname+subdomain, else ""
}

// Service is what DNS needs to know about one Service.
type Service struct {
	Namespace, Name string
	// ClusterIPs are the Service's cluster IPs; empty for headless Services.
	ClusterIPs []netip.Addr
	// Headless is true for clusterIP: None.
	Headless bool
	// ExternalName is the CNAME target of an ExternalName Service.
	ExternalName string
	// Ports are the Service's ports.
	Ports []Port
}

// Slice is the DNS view of one EndpointSlice.
type Slice struct {
	Namespace, Name string
	Service         string // the kubernetes.io/service-name label
	Ports           []Port
	Endpoints       []Endpoint // ready endpoints only
}

type service struct {
	Service
	ptrs []netip.Addr // addresses this service put into Index.ptr
}

type ptrRef struct {
	svc  *service
	host string // endpoint label for headless endpoints, "" for the cluster IP
}

// Index is the cluster-record table. It is safe for concurrent use: writers
// are the informer handlers, readers the DNS handler.
type Index struct {
	mu       sync.RWMutex
	services map[string]*service          // "name.namespace"
	slices   map[string]*Slice            // "namespace/slice" -> slice (also for services not yet seen)
	groups   map[string]map[string]*Slice // "name.namespace" -> slice name -> slice
	nsCount  map[string]int               // namespace -> services in it
	ptr      map[netip.Addr][]ptrRef      // reverse records
	nodes    map[string][]netip.Addr      // "nodename." -> InternalIPs
	serial   atomic.Uint32                // SOA serial, bumped on change
	synced   atomic.Bool                  // informers have synced
	changed  func()                       // test hook, may be nil
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	x := &Index{
		services: map[string]*service{},
		slices:   map[string]*Slice{},
		groups:   map[string]map[string]*Slice{},
		nsCount:  map[string]int{},
		ptr:      map[netip.Addr][]ptrRef{},
		nodes:    map[string][]netip.Addr{},
	}
	x.serial.Store(uint32(time.Now().Unix()))
	return x
}

// Synced reports whether the informers feeding x have synced once.
func (x *Index) Synced() bool { return x.synced.Load() }

// SetSynced records that the informers have synced.
func (x *Index) SetSynced() { x.synced.Store(true) }

func svcKey(ns, name string) string { return name + "." + ns }

// SetService adds or replaces a Service.
func (x *Index) SetService(s Service) {
	s.ExternalName = strings.ToLower(s.ExternalName)
	x.mu.Lock()
	defer x.mu.Unlock()
	k := svcKey(s.Namespace, s.Name)
	old := x.services[k]
	if old == nil {
		old = &service{}
		x.services[k] = old
		x.nsCount[s.Namespace]++
	}
	old.Service = s
	x.reindexPTR(old)
	x.bump()
}

// DeleteService removes a Service; its slices stay known until deleted.
func (x *Index) DeleteService(ns, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := svcKey(ns, name)
	s := x.services[k]
	if s == nil {
		return
	}
	x.dropPTR(s)
	delete(x.services, k)
	if x.nsCount[ns]--; x.nsCount[ns] <= 0 {
		delete(x.nsCount, ns)
	}
	x.bump()
}

// SetSlice adds or replaces an EndpointSlice.
func (x *Index) SetSlice(sl Slice) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := sl.Namespace + "/" + sl.Name
	if old := x.slices[k]; old != nil && old.Service != sl.Service {
		x.ungroup(old)
	}
	p := &sl
	x.slices[k] = p
	gk := svcKey(sl.Namespace, sl.Service)
	g := x.groups[gk]
	if g == nil {
		g = map[string]*Slice{}
		x.groups[gk] = g
	}
	g[sl.Name] = p
	if s := x.services[gk]; s != nil {
		x.reindexPTR(s)
	}
	x.bump()
}

// DeleteSlice removes an EndpointSlice.
func (x *Index) DeleteSlice(ns, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := ns + "/" + name
	old := x.slices[k]
	if old == nil {
		return
	}
	delete(x.slices, k)
	x.ungroup(old)
	x.bump()
}

// ungroup removes sl from its service's group. x.mu is held.
func (x *Index) ungroup(sl *Slice) {
	gk := svcKey(sl.Namespace, sl.Service)
	if g := x.groups[gk]; g != nil {
		delete(g, sl.Name)
		if len(g) == 0 {
			delete(x.groups, gk)
		}
	}
	if s := x.services[gk]; s != nil {
		x.reindexPTR(s)
	}
}

// SetNode records a node's addresses (none removes it).
func (x *Index) SetNode(name string, addrs []netip.Addr) {
	k := strings.ToLower(name) + "."
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(addrs) == 0 {
		delete(x.nodes, k)
	} else {
		x.nodes[k] = addrs
	}
	x.bump()
}

// Len returns the number of Services indexed.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.services)
}

func (x *Index) bump() {
	x.serial.Add(1)
	if x.changed != nil {
		x.changed()
	}
}

// reindexPTR recomputes the reverse records of s. x.mu is held.
func (x *Index) reindexPTR(s *service) {
	x.dropPTR(s)
	add := func(a netip.Addr, host string) {
		x.ptr[a] = append(x.ptr[a], ptrRef{svc: s, host: host})
		s.ptrs = append(s.ptrs, a)
	}
	if s.ExternalName != "" {
		return
	}
	for _, a := range s.ClusterIPs {
		add(a, "")
	}
	if s.Headless {
		for _, sl := range x.groups[svcKey(s.Namespace, s.Name)] {
			for _, e := range sl.Endpoints {
				add(e.Addr, endpointLabel(e))
			}
		}
	}
}

// dropPTR removes the reverse records of s. x.mu is held.
func (x *Index) dropPTR(s *service) {
	for _, a := range s.ptrs {
		refs := x.ptr[a]
		out := refs[:0]
		for _, r := range refs {
			if r.svc != s {
				out = append(out, r)
			}
		}
		if len(out) == 0 {
			delete(x.ptr, a)
		} else {
			x.ptr[a] = out
		}
	}
	s.ptrs = s.ptrs[:0]
}

// endpointLabel is the DNS label of a headless endpoint: its hostname, or
// its address with dashes (CoreDNS's convention).
func endpointLabel(e Endpoint) string {
	if e.Hostname != "" {
		return strings.ToLower(e.Hostname)
	}
	return dashed(e.Addr)
}

func dashed(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// undash parses an address in dashed form: a-b-c-d or an IPv6 address with
// ':' written as '-'.
func undash(s string) (netip.Addr, bool) {
	if strings.Count(s, "-") == 3 {
		if a, err := netip.ParseAddr(strings.ReplaceAll(s, "-", ".")); err == nil && a.Is4() {
			return a, true
		}
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(s, "-", ":"))
	if err != nil || !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}
