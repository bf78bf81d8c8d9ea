package scheduler

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// readiness is the node's Ready condition as a small value (comparing the
// condition's string would touch the Node object on every check).
type readiness uint8

const (
	readyMissing readiness = iota
	readyTrue
	readyFalse
	readyUnknown
)

// nodeInfo is the precomputed state of one node: what it offers, what its
// pods (bound or assumed) take, and the node fields the filters read.
type nodeInfo struct {
	name  string
	node  *corev1.Node // nil once the node is deleted while pods remain
	index int          // position in cache.list, -1 when not listed

	alloc     resources
	requested resources
	nzCPU     int64 // requests with scoring defaults
	nzMem     int64
	ports     []hostPort
	owners    map[types.UID]int32 // pods per controller UID
	pods      map[types.UID]*podInfo

	// Copies of the node fields the filters read, so a cycle walking many
	// nodes touches only this struct.
	ready         readiness
	unschedulable bool
	taints        []corev1.Taint
	hasPrefer     bool // a PreferNoSchedule taint exists
}

func (n *nodeInfo) setNode(node *corev1.Node) {
	n.node = node
	list := node.Status.Allocatable
	if len(list) == 0 {
		list = node.Status.Capacity
	}
	n.alloc = resourcesOf(list)
	n.ready = readyMissing
	n.unschedulable = node.Spec.Unschedulable
	n.taints = node.Spec.Taints
	n.hasPrefer = false
	for i := range n.taints {
		if n.taints[i].Effect == corev1.TaintEffectPreferNoSchedule {
			n.hasPrefer = true
		}
	}
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			switch node.Status.Conditions[i].Status {
			case corev1.ConditionTrue:
				n.ready = readyTrue
			case corev1.ConditionFalse:
				n.ready = readyFalse
			default:
				n.ready = readyUnknown
			}
		}
	}
}

func (n *nodeInfo) addPod(pi *podInfo) {
	n.pods[pi.uid] = pi
	n.requested.add(&pi.req, 1)
	n.nzCPU += pi.nonzeroCPU
	n.nzMem += pi.nonzeroMem
	n.ports = append(n.ports, pi.ports...)
	if pi.owner != "" {
		n.owners[pi.owner]++
	}
}

func (n *nodeInfo) removePod(pi *podInfo) {
	delete(n.pods, pi.uid)
	n.requested.add(&pi.req, -1)
	n.nzCPU -= pi.nonzeroCPU
	n.nzMem -= pi.nonzeroMem
	if len(pi.ports) > 0 {
		n.ports = n.ports[:0]
		for _, p := range n.pods {
			n.ports = append(n.ports, p.ports...)
		}
	}
	if pi.owner != "" {
		if n.owners[pi.owner]--; n.owners[pi.owner] <= 0 {
			delete(n.owners, pi.owner)
		}
	}
}

// podState is where the cache accounts a pod.
type podState struct {
	info     *podInfo
	node     string
	assumed  bool      // scheduled here, not yet seen bound by the informer
	bindDone time.Time // when the binding call returned (assumed pods)
}

// nodeCache is the scheduler's node and pod accounting. Pods the scheduler
// assumed count against their node until the informer confirms the binding,
// so a burst never double-books a node.
type nodeCache struct {
	mu    sync.Mutex
	nodes map[string]*nodeInfo
	list  []*nodeInfo // listed (existing) nodes, the order sampling walks
	pods  map[types.UID]*podState
	nz    corev1.ResourceList
}

func newCache() *nodeCache {
	return &nodeCache{nodes: map[string]*nodeInfo{}, pods: map[types.UID]*podState{}, nz: newNonzeroDefaults()}
}

func (c *nodeCache) info(name string) *nodeInfo {
	n := c.nodes[name]
	if n == nil {
		n = &nodeInfo{name: name, index: -1, owners: map[types.UID]int32{}, pods: map[types.UID]*podInfo{}}
		c.nodes[name] = n
	}
	return n
}

// setNode adds or updates a node.
func (c *nodeCache) setNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.info(node.Name)
	n.setNode(node)
	if n.index < 0 {
		n.index = len(c.list)
		c.list = append(c.list, n)
	}
}

// deleteNode removes a node; its pods stay accounted until they go.
func (c *nodeCache) deleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	if n == nil {
		return
	}
	c.unlist(n)
	n.node = nil
	if len(n.pods) == 0 {
		delete(c.nodes, name)
	}
}

func (c *nodeCache) unlist(n *nodeInfo) {
	if n.index < 0 {
		return
	}
	last := len(c.list) - 1
	c.list[n.index] = c.list[last]
	c.list[n.index].index = n.index
	c.list[last] = nil
	c.list = c.list[:last]
	n.index = -1
}

// setPod accounts a pod the informer sees bound (confirming an assumed
// one) or updated.
func (c *nodeCache) setPod(p *corev1.Pod) {
	pi := assignedInfo(p, c.nz)
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[p.UID]; ok {
		c.removeLocked(st)
	}
	c.info(p.Spec.NodeName).addPod(pi)
	c.pods[p.UID] = &podState{info: pi, node: p.Spec.NodeName}
}

// removePod forgets a pod (deleted or terminated).
func (c *nodeCache) removePod(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[uid]; ok {
		c.removeLocked(st)
	}
}

func (c *nodeCache) removeLocked(st *podState) {
	delete(c.pods, st.info.uid)
	n := c.nodes[st.node]
	if n == nil {
		return
	}
	n.removePod(st.info)
	if n.node == nil && len(n.pods) == 0 {
		delete(c.nodes, st.node)
	}
}

// assumeLocked accounts pi on node before the binding is confirmed; the
// caller holds c.mu (the scheduling cycle).
func (c *nodeCache) assumeLocked(pi *podInfo, n *nodeInfo) {
	if st, ok := c.pods[pi.uid]; ok {
		c.removeLocked(st)
	}
	n.addPod(pi)
	c.pods[pi.uid] = &podState{info: pi, node: n.name, assumed: true}
}

// finishBinding starts the expiry clock of an assumed pod.
func (c *nodeCache) finishBinding(uid types.UID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[uid]; ok && st.assumed {
		st.bindDone = now
	}
}

// forget drops an assumed pod whose binding failed.
func (c *nodeCache) forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.pods[uid]; ok && st.assumed {
		c.removeLocked(st)
	}
}

// known reports whether the pod is accounted (assumed or bound).
func (c *nodeCache) known(uid types.UID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pods[uid]
	return ok
}

// expire drops assumed pods whose binding finished more than ttl ago and
// that the informer never confirmed; it returns how many it dropped.
func (c *nodeCache) expire(now time.Time, ttl time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, st := range c.pods {
		if st.assumed && !st.bindDone.IsZero() && now.Sub(st.bindDone) > ttl {
			c.removeLocked(st)
			n++
		}
	}
	return n
}
