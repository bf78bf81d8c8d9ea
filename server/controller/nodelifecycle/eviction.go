package nodelifecycle

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// syncPod removes one bound pod when its node calls for it: the node is
// gone (orphan), the pod does not tolerate a NoExecute taint (now, or after
// its tolerationSeconds), or it is stuck terminating on an unreachable node.
func (c *Controller) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := c.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pod %s: %w", key, err)
	}
	if pod.Spec.NodeName == "" {
		return nil
	}
	node, err := c.nodes.Get(pod.Spec.NodeName)
	if apierrors.IsNotFound(err) {
		return c.collectOrphan(ctx, pod)
	}
	if err != nil {
		return fmt.Errorf("get node %s: %w", pod.Spec.NodeName, err)
	}
	if pod.DeletionTimestamp != nil {
		if !unreachable(node) {
			return nil
		}
		if wait := pod.DeletionTimestamp.Sub(c.now()); wait > 0 {
			return &kit.RequeueAfter{Delay: wait}
		}
		c.log.Info("force-deleting pod terminating on unreachable node", "pod", key, "node", node.Name)
		return c.forceDelete(ctx, pod)
	}
	if c.cfg.DisableEviction || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	wait, evict := c.evictIn(pod, node)
	if !evict {
		return nil
	}
	if wait > 0 {
		return &kit.RequeueAfter{Delay: wait}
	}
	c.recorder.Eventf(pod, corev1.EventTypeNormal, "TaintManagerEviction", "Marking for deletion Pod %s/%s", pod.Namespace, pod.Name)
	c.log.Info("evicting pod from tainted node", "pod", key, "node", node.Name)
	uid := pod.UID
	err = c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("evict pod %s: %w", key, err)
	}
	return nil
}

// evictIn says whether the pod must leave its node because of NoExecute
// taints, and after how long: at once for a taint it does not tolerate,
// else the shortest tolerationSeconds of the tolerations in use, counted
// from when the taint was added.
func (c *Controller) evictIn(pod *corev1.Pod, node *corev1.Node) (time.Duration, bool) {
	now := c.now()
	var deadline time.Time
	evict := false
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		var limit *int64
		tolerated, forever := false, false
		for j := range pod.Spec.Tolerations {
			tol := &pod.Spec.Tolerations[j]
			if !tol.ToleratesTaint(c.logr, t, true) {
				continue
			}
			tolerated = true
			if tol.TolerationSeconds == nil {
				forever = true
				continue
			}
			if limit == nil || *tol.TolerationSeconds < *limit {
				limit = tol.TolerationSeconds
			}
		}
		if !tolerated {
			return 0, true
		}
		if forever && limit == nil {
			continue
		}
		added := now
		if t.TimeAdded != nil {
			added = t.TimeAdded.Time
		}
		d := added.Add(time.Duration(max(*limit, 0)) * time.Second)
		if !evict || d.Before(deadline) {
			deadline, evict = d, true
		}
	}
	if !evict {
		return 0, false
	}
	return max(deadline.Sub(now), 0), true
}

// unreachable: the node stopped reporting (Ready Unknown or the
// unreachable taint).
func unreachable(node *corev1.Node) bool {
	if r := condition(node, corev1.NodeReady); r != nil && r.Status == corev1.ConditionUnknown {
		return true
	}
	for _, t := range node.Spec.Taints {
		if t.Key == corev1.TaintNodeUnreachable {
			return true
		}
	}
	return false
}

// collectOrphan force-deletes a pod bound to a node that no longer
// exists, after checking with the API that the node is really gone (the
// informer may simply lag a new node).
func (c *Controller) collectOrphan(ctx context.Context, pod *corev1.Pod) error {
	_, err := c.client.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("check node %s: %w", pod.Spec.NodeName, err)
	}
	c.log.Info("deleting pod of deleted node", "pod", pod.Namespace+"/"+pod.Name, "node", pod.Spec.NodeName)
	return c.forceDelete(ctx, pod)
}

func (c *Controller) forceDelete(ctx context.Context, pod *corev1.Pod) error {
	uid := pod.UID
	err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("force-delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
