package daemonset

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// nodeState is one node as one DaemonSet sees it.
type nodeState struct {
	node           *corev1.Node
	shouldRun      bool
	shouldContinue bool
	pods           []*corev1.Pod // the DaemonSet's live pods on it, oldest first
}

// plan is what one sync changes.
type plan struct {
	create  []string      // nodes
	delete  []*corev1.Pod // pods
	requeue time.Duration // look again after this long (0: no need)
}

func (p *plan) after(d time.Duration) {
	if d > 0 && (p.requeue == 0 || d < p.requeue) {
		p.requeue = d
	}
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ds, err := c.dsLister.DaemonSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.Delete(key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get daemonset %s: %w", key, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		c.recorder.Eventf(ds, corev1.EventTypeWarning, "SelectingAll", "This daemon set is selecting all pods or has an invalid selector. A non-empty selector is required.")
		return nil
	}
	if ds.DeletionTimestamp != nil {
		return nil
	}
	now := c.now()
	c.failed.gc(now)

	cur, old, err := c.revisions(ctx, ds, sel)
	if err != nil {
		return fmt.Errorf("daemonset %s revisions: %w", key, err)
	}
	hash := cur.Labels[hashLabel]

	all, err := c.pods.Pods(ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var live []*corev1.Pod
	for _, p := range all {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	claimer := &kit.Claimer{
		Owner:    ds,
		Ref:      kit.ControllerRef(ds, controllerKind.GroupVersion().String(), controllerKind.Kind),
		Selector: sel,
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := c.client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
		CanAdopt: c.canAdopt(ds),
	}
	pods, claimErr := kit.Claim(ctx, claimer, live)

	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	states, strays := group(ds, nodes, pods)

	var p plan
	var actErr error
	if c.exp.Satisfied(key) {
		p = c.manage(key, ds, states, strays, hash, now)
		if len(p.create) == 0 && len(p.delete) == 0 && ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
			c.rollingUpdate(ds, states, hash, now, &p)
		}
		actErr = c.act(ctx, key, ds, hash, &p)
	}
	statusErr := c.updateStatus(ctx, ds, states, hash, now, &p)
	inUse := map[string]bool{hash: true}
	for _, pod := range pods {
		inUse[pod.Labels[hashLabel]] = true
	}
	histErr := c.truncateHistory(ctx, ds, old, inUse)
	if err := errors.Join(claimErr, actErr, statusErr, histErr); err != nil {
		return err
	}
	if p.requeue > 0 {
		c.queue.AddAfter(key, p.requeue)
	}
	return nil
}

// group sorts the DaemonSet's pods by node; strays are pods of nodes that
// no longer exist.
func group(ds *appsv1.DaemonSet, nodes []*corev1.Node, pods []*corev1.Pod) ([]*nodeState, []*corev1.Pod) {
	place := newPlacement(ds)
	byNode := map[string][]*corev1.Pod{}
	for _, p := range pods {
		n := targetNode(p)
		byNode[n] = append(byNode[n], p)
	}
	states := make([]*nodeState, 0, len(nodes))
	for _, n := range nodes {
		st := &nodeState{node: n, pods: byNode[n.Name]}
		delete(byNode, n.Name)
		st.shouldRun, st.shouldContinue = place.check(n)
		sort.SliceStable(st.pods, func(i, j int) bool {
			a, b := st.pods[i].CreationTimestamp, st.pods[j].CreationTimestamp
			if a.Equal(&b) {
				return st.pods[i].Name < st.pods[j].Name
			}
			return a.Before(&b)
		})
		states = append(states, st)
	}
	sort.Slice(states, func(i, j int) bool { return states[i].node.Name < states[j].node.Name })
	var strays []*corev1.Pod
	for _, ps := range byNode {
		strays = append(strays, ps...)
	}
	return states, strays
}

// manage puts one pod on every node that should run one and removes the
// others: failed pods (replaced after a back-off), duplicates, pods on
// nodes that no longer qualify or exist.
func (c *Controller) manage(key string, ds *appsv1.DaemonSet, states []*nodeState, strays []*corev1.Pod, hash string, now time.Time) plan {
	var p plan
	p.delete = append(p.delete, strays...)
	surge := ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType && maxSurge(ds, 1) > 0
	for _, st := range states {
		bkey := key + "/" + st.node.Name
		if !st.shouldContinue {
			p.delete = append(p.delete, st.pods...)
			continue
		}
		var running []*corev1.Pod
		for _, pod := range st.pods {
			if pod.Status.Phase == corev1.PodFailed {
				p.delete = append(p.delete, pod)
				c.failed.fail(bkey, now)
				c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedDaemonPod", "Found failed daemon pod %s/%s on node %s, will try to kill it", pod.Namespace, pod.Name, st.node.Name)
				continue
			}
			running = append(running, pod)
		}
		switch {
		case len(running) == 0:
			if !st.shouldRun {
				continue
			}
			if wait := c.failed.wait(bkey, now); wait > 0 {
				p.after(wait)
				continue
			}
			p.create = append(p.create, st.node.Name)
		case len(running) > 1:
			keep := keepOnNode(running, hash, surge, ds.Spec.MinReadySeconds, now)
			for _, pod := range running {
				if !keep[pod] {
					p.delete = append(p.delete, pod)
				}
			}
		}
	}
	return p
}

// keepOnNode picks the pods to keep among several on one node (oldest
// first): the oldest one, or, while a surge update is under way, the
// oldest new pod and, until the new one is available, the oldest
// available old one.
func keepOnNode(pods []*corev1.Pod, hash string, surge bool, minReady int32, now time.Time) map[*corev1.Pod]bool {
	if !surge {
		return map[*corev1.Pod]bool{pods[0]: true}
	}
	var newest, oldest *corev1.Pod
	for _, pod := range pods {
		if pod.Labels[hashLabel] == hash {
			if newest == nil {
				newest = pod
			}
		} else if oldest == nil {
			oldest = pod
		}
	}
	switch {
	case newest == nil:
		return map[*corev1.Pod]bool{oldest: true}
	case oldest == nil || kit.PodAvailable(newest, minReady, now) || !kit.PodAvailable(oldest, minReady, now):
		return map[*corev1.Pod]bool{newest: true}
	default:
		return map[*corev1.Pod]bool{newest: true, oldest: true}
	}
}

func scaled(v *intstr.IntOrString, total int, def int) int {
	if v == nil {
		return def
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, total, true)
	if err != nil {
		return def
	}
	return n
}

func maxSurge(ds *appsv1.DaemonSet, total int) int {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil {
		return 0
	}
	return scaled(ru.MaxSurge, total, 0)
}

func maxUnavailable(ds *appsv1.DaemonSet, total int) int {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	n := 1
	if ru != nil {
		n = scaled(ru.MaxUnavailable, total, 1)
	}
	if n == 0 && maxSurge(ds, total) == 0 {
		n = 1
	}
	return n
}

// rollingUpdate replaces pods of old revisions, keeping at most
// maxUnavailable nodes without an available pod (maxSurge 0: delete an old
// pod, then its replacement is created) or starting at most maxSurge new
// pods beside old ones (then deleting each old pod once its replacement is
// available).
func (c *Controller) rollingUpdate(ds *appsv1.DaemonSet, states []*nodeState, hash string, now time.Time, p *plan) {
	desired := 0
	for _, st := range states {
		if st.shouldRun {
			desired++
		}
	}
	minReady := ds.Spec.MinReadySeconds
	avail := func(pod *corev1.Pod) bool {
		if pod.Status.Phase == corev1.PodRunning || kit.PodReady(pod) {
			if d := kit.AvailableIn(pod, minReady, now); d > 0 {
				p.after(d + 100*time.Millisecond)
			}
		}
		return kit.PodAvailable(pod, minReady, now)
	}
	surge, unavailable := maxSurge(ds, desired), maxUnavailable(ds, desired)
	var candidates []*corev1.Pod
	if surge == 0 {
		numUnavailable := 0
		var replace []*corev1.Pod
		for _, st := range states {
			if !st.shouldContinue {
				continue
			}
			newPod, oldPod := split(st.pods, hash)
			switch {
			case newPod != nil:
				if !avail(newPod) {
					numUnavailable++
				}
			case oldPod != nil:
				if !avail(oldPod) {
					numUnavailable++
					replace = append(replace, oldPod)
				} else {
					candidates = append(candidates, oldPod)
				}
			case st.shouldRun:
				numUnavailable++
			}
		}
		budget := max(unavailable-numUnavailable, 0)
		p.delete = append(p.delete, replace...)
		p.delete = append(p.delete, candidates[:min(budget, len(candidates))]...)
		return
	}
	surging := 0
	var startNow []string
	var candNodes []string
	for _, st := range states {
		if !st.shouldContinue {
			continue
		}
		newPod, oldPod := split(st.pods, hash)
		switch {
		case newPod != nil && oldPod != nil:
			if avail(newPod) {
				p.delete = append(p.delete, oldPod)
			} else {
				surging++
			}
		case oldPod != nil && st.shouldRun:
			if avail(oldPod) {
				candNodes = append(candNodes, st.node.Name)
			} else {
				startNow = append(startNow, st.node.Name)
			}
		}
	}
	budget := max(surge-surging, 0)
	p.create = append(p.create, startNow...)
	p.create = append(p.create, candNodes[:min(budget, len(candNodes))]...)
}

// split returns the oldest pod of the current revision and the oldest of
// an older one.
func split(pods []*corev1.Pod, hash string) (newPod, oldPod *corev1.Pod) {
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodFailed {
			continue
		}
		if pod.Labels[hashLabel] == hash {
			if newPod == nil {
				newPod = pod
			}
		} else if oldPod == nil {
			oldPod = pod
		}
	}
	return newPod, oldPod
}

// act carries out the plan: deletions first; creations only when nothing
// is being deleted (the expectations track one kind at a time).
func (c *Controller) act(ctx context.Context, key string, ds *appsv1.DaemonSet, hash string, p *plan) error {
	seen := map[types.UID]bool{}
	var dels []*corev1.Pod
	for _, pod := range p.delete {
		if !seen[pod.UID] {
			seen[pod.UID] = true
			dels = append(dels, pod)
		}
	}
	if len(dels) > c.cfg.BurstReplicas {
		dels = dels[:c.cfg.BurstReplicas]
	}
	if len(dels) > 0 {
		keys := make([]string, len(dels))
		for i, pod := range dels {
			keys[i], _ = kit.Key(pod)
		}
		c.exp.ExpectDeletions(key, keys)
		var errs []error
		for i, pod := range dels {
			uid := pod.UID
			err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil {
				c.exp.DeletionObserved(key, keys[i])
				if !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
					errs = append(errs, fmt.Errorf("delete pod %s: %w", pod.Name, err))
				}
				continue
			}
			c.recorder.Eventf(ds, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", pod.Name)
		}
		return errors.Join(errs...)
	}
	nodes := p.create
	if len(nodes) > c.cfg.BurstReplicas {
		nodes = nodes[:c.cfg.BurstReplicas]
		p.after(time.Millisecond)
	}
	if len(nodes) == 0 {
		return nil
	}
	c.exp.ExpectCreations(key, len(nodes))
	var next atomic.Int64
	created, err := kit.SlowStart(len(nodes), 1, func() error {
		node := nodes[next.Add(1)-1]
		pod, err := c.client.CoreV1().Pods(ds.Namespace).Create(ctx, newPod(ds, node, hash), metav1.CreateOptions{})
		if err != nil {
			if kit.NamespaceTerminating(err) {
				return nil
			}
			return err
		}
		c.recorder.Eventf(ds, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", pod.Name)
		return nil
	})
	for i := created; i < len(nodes); i++ {
		c.exp.CreationObserved(key)
	}
	if err != nil {
		c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		return fmt.Errorf("create daemon pods for %s: %w", key, err)
	}
	return nil
}

// updateStatus writes the DaemonSet's counts when they changed.
func (c *Controller) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, states []*nodeState, hash string, now time.Time, p *plan) error {
	st := appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, CollisionCount: ds.Status.CollisionCount, Conditions: ds.Status.Conditions}
	for _, n := range states {
		var running []*corev1.Pod
		for _, pod := range n.pods {
			if pod.Status.Phase != corev1.PodFailed {
				running = append(running, pod)
			}
		}
		if !n.shouldRun {
			if len(running) > 0 {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if len(running) == 0 {
			continue
		}
		st.CurrentNumberScheduled++
		newPod, oldPod := split(running, hash)
		pod := newPod
		if pod == nil {
			pod = oldPod
		}
		if newPod != nil {
			st.UpdatedNumberScheduled++
		}
		if kit.PodReady(pod) {
			st.NumberReady++
			if kit.PodAvailable(pod, ds.Spec.MinReadySeconds, now) {
				st.NumberAvailable++
			} else {
				p.after(kit.AvailableIn(pod, ds.Spec.MinReadySeconds, now) + 100*time.Millisecond)
			}
		}
	}
	st.NumberUnavailable = st.DesiredNumberScheduled - st.NumberAvailable
	if apiequality.Semantic.DeepEqual(st, ds.Status) {
		return nil
	}
	up := ds.DeepCopy()
	up.Status = st
	if _, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, up, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	return nil
}
