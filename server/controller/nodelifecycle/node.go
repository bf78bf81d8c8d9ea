package nodelifecycle

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
)

func everything() labels.Selector { return labels.Everything() }

// Node condition texts, as upstream writes them.
const (
	reasonStatusUnknown = "NodeStatusUnknown"
	msgStopped          = "Kubelet stopped posting node status."
	msgNever            = "Kubelet never posted node status."
)

// syncNode checks one node's heartbeats and reconciles its taints.
func (c *Controller) syncNode(ctx context.Context, name string) error {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get node %s: %w", name, err)
	}
	if c.stale(node) && !alreadyUnknown(node) {
		if node, err = c.markUnknown(ctx, name); err != nil {
			return err
		}
		if node == nil {
			return nil
		}
	}
	return c.reconcileTaints(ctx, node)
}

// stale records the node's latest heartbeats (Ready condition and Lease)
// and reports whether neither changed within the grace period.
func (c *Controller) stale(node *corev1.Node) bool {
	var hb metav1.Time
	if r := condition(node, corev1.NodeReady); r != nil {
		hb = r.LastHeartbeatTime
	}
	var renew time.Time
	if l, err := c.leases.Leases(LeaseNamespace).Get(node.Name); err == nil && l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.Time
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.health[node.Name]
	if p == nil || !p.readyHeartbeat.Equal(&hb) || !p.leaseRenew.Equal(renew) {
		c.health[node.Name] = &probe{readyHeartbeat: hb, leaseRenew: renew, changed: now}
		return false
	}
	return now.Sub(p.changed) > c.cfg.GracePeriod
}

// alreadyUnknown: the node's Ready condition says Unknown already (so a
// stale node is not re-read from the API every monitor period).
func alreadyUnknown(node *corev1.Node) bool {
	r := condition(node, corev1.NodeReady)
	return r != nil && r.Status == corev1.ConditionUnknown
}

func condition(node *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// markUnknown sets the node's Ready and pressure conditions to Unknown; it
// returns the updated node (nil when the node is gone).
func (c *Controller) markUnknown(ctx context.Context, name string) (*corev1.Node, error) {
	var out *corev1.Node
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewTime(c.now())
		changed = false
		if condition(node, corev1.NodeReady) == nil {
			node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{
				Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: reasonStatusUnknown,
				Message: msgNever, LastHeartbeatTime: node.CreationTimestamp, LastTransitionTime: now,
			})
			changed = true
		}
		for _, t := range []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
			cond := condition(node, t)
			if cond == nil || cond.Status == corev1.ConditionUnknown {
				continue
			}
			cond.Status, cond.Reason, cond.Message, cond.LastTransitionTime = corev1.ConditionUnknown, reasonStatusUnknown, msgStopped, now
			changed = true
		}
		if !changed {
			out = node
			return nil
		}
		out, err = c.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mark node %s unknown: %w", name, err)
	}
	if changed {
		c.log.Info("node stopped posting status", "node", name)
		c.recorder.Eventf(nodeRef(name), corev1.EventTypeNormal, "NodeNotReady", "Node %s status is now: NodeNotReady", name)
	}
	return out, nil
}

func nodeRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: name, UID: "", APIVersion: "v1"}
}

// isManaged reports a taint this controller owns (by key and effect).
func isManaged(t *corev1.Taint) bool {
	switch t.Key {
	case corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable:
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	case corev1.TaintNodeMemoryPressure, corev1.TaintNodeDiskPressure, corev1.TaintNodePIDPressure,
		corev1.TaintNodeNetworkUnavailable, corev1.TaintNodeUnschedulable:
		return t.Effect == corev1.TaintEffectNoSchedule
	}
	return false
}

// wantedTaints are the managed taints the node's state calls for.
func wantedTaints(node *corev1.Node) []corev1.Taint {
	var out []corev1.Taint
	both := func(key string) {
		out = append(out, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule}, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute})
	}
	switch r := condition(node, corev1.NodeReady); {
	case r == nil:
		out = append(out, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})
	case r.Status == corev1.ConditionFalse:
		both(corev1.TaintNodeNotReady)
	case r.Status == corev1.ConditionUnknown:
		both(corev1.TaintNodeUnreachable)
	}
	for t, key := range map[corev1.NodeConditionType]string{
		corev1.NodeMemoryPressure:     corev1.TaintNodeMemoryPressure,
		corev1.NodeDiskPressure:       corev1.TaintNodeDiskPressure,
		corev1.NodePIDPressure:        corev1.TaintNodePIDPressure,
		corev1.NodeNetworkUnavailable: corev1.TaintNodeNetworkUnavailable,
	} {
		if cond := condition(node, t); cond != nil && cond.Status == corev1.ConditionTrue {
			out = append(out, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
		}
	}
	if node.Spec.Unschedulable {
		out = append(out, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule})
	}
	return out
}

// desiredTaints is node's taint list with the managed ones made to match
// its state; ok is false when nothing changes.
func desiredTaints(node *corev1.Node, now time.Time) ([]corev1.Taint, bool) {
	want := wantedTaints(node)
	has := func(list []corev1.Taint, t *corev1.Taint) bool {
		for i := range list {
			if list[i].Key == t.Key && list[i].Effect == t.Effect {
				return true
			}
		}
		return false
	}
	var out []corev1.Taint
	changed := false
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if isManaged(t) && !has(want, t) {
			changed = true
			continue
		}
		out = append(out, *t)
	}
	for i := range want {
		if has(node.Spec.Taints, &want[i]) {
			continue
		}
		t := want[i]
		if t.Effect == corev1.TaintEffectNoExecute {
			t.TimeAdded = &metav1.Time{Time: now}
		}
		out = append(out, t)
		changed = true
	}
	return out, changed
}

// reconcileTaints applies desiredTaints.
func (c *Controller) reconcileTaints(ctx context.Context, node *corev1.Node) error {
	if _, changed := desiredTaints(node, c.now()); !changed {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh, err := c.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		taints, changed := desiredTaints(fresh, c.now())
		if !changed {
			return nil
		}
		fresh.Spec.Taints = taints
		_, err = c.client.CoreV1().Nodes().Update(ctx, fresh, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("taints of node %s: %w", node.Name, err)
	}
	return nil
}
