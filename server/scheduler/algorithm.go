package scheduler

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// Filter failure reasons, worded as upstream's plugins word them so the
// FailedScheduling messages read the same.
const (
	reasonUnschedulable = "node(s) were unschedulable"
	reasonNodeName      = "node(s) didn't match the requested node name"
	reasonAffinity      = "node(s) didn't match Pod's node affinity/selector"
	reasonPorts         = "node(s) didn't have free ports for the requested pod ports"
	reasonTooManyPods   = "Too many pods"
	reasonNoNodes       = "no nodes available to schedule pods"
)

// Score weights, as upstream's default profile weighs the matching plugins.
const (
	weightLeast    = 1 // NodeResourcesFit, LeastAllocated
	weightBalanced = 1 // NodeResourcesBalancedAllocation
	weightSpread   = 2 // spreading pods of the same owner (PodTopologySpread defaults)
	weightAffinity = 2 // NodeAffinity, preferred terms
	weightTaint    = 3 // TaintToleration, PreferNoSchedule
	maxNodeScore   = 100
)

// Sampling, as upstream's percentageOfNodesToScore: below minFeasible nodes
// every node is checked; above, an adaptive share of them (50% minus one per
// 125 nodes, at least 5%) once that many fit.
const (
	minFeasibleNodes         = 100
	minFeasiblePercentage    = 5
	defaultPercentageToScore = 50
)

func taintReason(t *corev1.Taint) string {
	return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
}

// candidate is a node that passed the filters with its raw scores.
type candidate struct {
	n        *nodeInfo
	resource int64 // least requested + balanced allocation, already weighted
	owners   int32
	affinity int64
	prefer   int64 // untolerated PreferNoSchedule taints
}

// algorithm holds the scratch state of scheduling cycles; one cycle runs at
// a time (the caller holds the cache lock).
type algorithm struct {
	percentage int // configured percentageOfNodesToScore, 0 adaptive
	next       int // where the next cycle starts walking the node list
	cands      []candidate
	reasons    []string
	log        logr.Logger
	intn       func(int) int
}

func newAlgorithm(percentage int, log logr.Logger) *algorithm {
	return &algorithm{percentage: percentage, log: log, intn: rand.IntN}
}

// numToFind is how many feasible nodes a cycle looks for among total.
func (a *algorithm) numToFind(total int) int {
	if total < minFeasibleNodes {
		return total
	}
	pct := a.percentage
	if pct <= 0 {
		pct = defaultPercentageToScore - total/125
		if pct < minFeasiblePercentage {
			pct = minFeasiblePercentage
		}
	}
	if pct >= 100 {
		return total
	}
	n := total * pct / 100
	if n < minFeasibleNodes {
		return minFeasibleNodes
	}
	return n
}

// diagnosis is why no node fits: reason → nodes, over total nodes.
type diagnosis struct {
	total   int
	reasons map[string]int
}

// message is upstream's FailedScheduling message.
func (d *diagnosis) message() string {
	if d.total == 0 {
		return reasonNoNodes
	}
	parts := make([]string, 0, len(d.reasons))
	for r, n := range d.reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s. preemption: 0/%d nodes are available: %d No preemption victims found for incoming pod.",
		d.total, strings.Join(parts, ", "), d.total, d.total)
}

// schedule picks the node for pi from c (locked by the caller), or
// explains why none fits.
func (a *algorithm) schedule(c *nodeCache, pi *podInfo) (*nodeInfo, *diagnosis) {
	total := len(c.list)
	want := a.numToFind(total)
	a.cands = a.cands[:0]
	var diag *diagnosis
	start := a.next
	if start >= total {
		start = 0
	}
	seen := 0
	for ; seen < total && len(a.cands) < want; seen++ {
		n := c.list[(start+seen)%total]
		reasons := a.filter(pi, n, a.reasons[:0])
		if len(reasons) > 0 {
			if diag == nil {
				diag = &diagnosis{reasons: map[string]int{}}
			}
			for _, r := range reasons {
				diag.reasons[r]++
			}
			a.reasons = reasons
			continue
		}
		a.cands = append(a.cands, a.rawScore(pi, n))
	}
	if total > 0 {
		a.next = (start + seen) % total
	}
	if len(a.cands) == 0 {
		if diag == nil {
			diag = &diagnosis{reasons: map[string]int{}}
		}
		diag.total = total
		return nil, diag
	}
	return a.pick(pi), nil
}

// filter appends to out why n cannot run pi; nothing when it can.
func (a *algorithm) filter(pi *podInfo, n *nodeInfo, out []string) []string {
	p := pi.pod
	// NodeUnschedulable.
	if n.unschedulable && !tolerates(a.log, pi.tols, &corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return append(out, reasonUnschedulable)
	}
	// NodeName.
	if p.Spec.NodeName != "" && p.Spec.NodeName != n.name {
		return append(out, reasonNodeName)
	}
	// TaintToleration, with a node that is not Ready counting as carrying
	// the taint the node lifecycle controller gives it.
	hasReadyTaint := false
	for i := range n.taints {
		t := &n.taints[i]
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			hasReadyTaint = true
		}
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !tolerates(a.log, pi.tols, t) {
			return append(out, taintReason(t))
		}
	}
	if n.ready != readyTrue && !hasReadyTaint {
		t := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
		if n.ready == readyUnknown {
			t.Key = corev1.TaintNodeUnreachable
		}
		if !tolerates(a.log, pi.tols, &t) {
			return append(out, taintReason(&t))
		}
	}
	// NodeAffinity (nodeSelector and required terms).
	if pi.hasRequired {
		ok, err := pi.required.Match(n.node)
		if err != nil || !ok {
			return append(out, reasonAffinity)
		}
	}
	// NodePorts.
	for _, want := range pi.ports {
		for _, used := range n.ports {
			if want.conflicts(used) {
				return append(out, reasonPorts)
			}
		}
	}
	// NodeResourcesFit: every shortfall is reported.
	if n.requested.pods+1 > n.alloc.pods {
		out = append(out, reasonTooManyPods)
	}
	r := &pi.req
	if r.milliCPU > 0 && n.requested.milliCPU+r.milliCPU > n.alloc.milliCPU {
		out = append(out, "Insufficient cpu")
	}
	if r.memory > 0 && n.requested.memory+r.memory > n.alloc.memory {
		out = append(out, "Insufficient memory")
	}
	if r.storage > 0 && n.requested.storage+r.storage > n.alloc.storage {
		out = append(out, "Insufficient ephemeral-storage")
	}
	for name, v := range r.scalar {
		if v > 0 && n.requested.scalar[name]+v > n.alloc.scalar[name] {
			out = append(out, "Insufficient "+string(name))
		}
	}
	return out
}

// rawScore computes the scores that need no normalisation and the raw
// inputs of those that do.
func (a *algorithm) rawScore(pi *podInfo, n *nodeInfo) candidate {
	c := candidate{n: n}
	cpuReq, memReq := n.nzCPU+pi.nonzeroCPU, n.nzMem+pi.nonzeroMem
	least := (leastRequested(cpuReq, n.alloc.milliCPU) + leastRequested(memReq, n.alloc.memory)) / 2
	c.resource = weightLeast*least + weightBalanced*balanced(cpuReq, n.alloc.milliCPU, memReq, n.alloc.memory)
	if pi.owner != "" {
		c.owners = n.owners[pi.owner]
	}
	if pi.preferred != nil {
		c.affinity = pi.preferred.Score(n.node)
	}
	if !n.hasPrefer {
		return c
	}
	for i := range n.taints {
		t := &n.taints[i]
		if t.Effect != corev1.TaintEffectPreferNoSchedule {
			continue
		}
		tolerated := false
		for j := range pi.tols {
			tol := &pi.tols[j]
			if (tol.Effect == "" || tol.Effect == corev1.TaintEffectPreferNoSchedule) && tol.ToleratesTaint(a.log, t, true) {
				tolerated = true
				break
			}
		}
		if !tolerated {
			c.prefer++
		}
	}
	return c
}

func leastRequested(requested, capacity int64) int64 {
	if capacity <= 0 || requested > capacity {
		return 0
	}
	return (capacity - requested) * maxNodeScore / capacity
}

func balanced(cpuReq, cpuCap, memReq, memCap int64) int64 {
	frac := func(r, c int64) float64 {
		if c <= 0 {
			return 1
		}
		f := float64(r) / float64(c)
		if f > 1 {
			return 1
		}
		return f
	}
	d := frac(cpuReq, cpuCap) - frac(memReq, memCap)
	if d < 0 {
		d = -d
	}
	// The standard deviation of two fractions is half their distance.
	return int64((1 - d/2) * maxNodeScore)
}

// pick normalises the scores over the candidates and returns the best,
// breaking ties at random.
func (a *algorithm) pick(pi *podInfo) *nodeInfo {
	var maxOwners int32
	var maxAff, maxPrefer int64
	for i := range a.cands {
		c := &a.cands[i]
		maxOwners = max(maxOwners, c.owners)
		maxAff = max(maxAff, c.affinity)
		maxPrefer = max(maxPrefer, c.prefer)
	}
	var best *nodeInfo
	bestScore, ties := int64(-1), 0
	for i := range a.cands {
		c := &a.cands[i]
		s := c.resource
		spread, aff, taint := int64(maxNodeScore), int64(0), int64(maxNodeScore)
		if maxOwners > 0 {
			spread = int64(maxOwners-c.owners) * maxNodeScore / int64(maxOwners)
		}
		if maxAff > 0 {
			aff = c.affinity * maxNodeScore / maxAff
		}
		if maxPrefer > 0 {
			taint = maxNodeScore - c.prefer*maxNodeScore/maxPrefer
		}
		s += weightSpread*spread + weightAffinity*aff + weightTaint*taint
		switch {
		case s > bestScore:
			best, bestScore, ties = c.n, s, 1
		case s == bestScore:
			ties++
			if a.intn(ties) == 0 {
				best = c.n
			}
		}
	}
	return best
}
