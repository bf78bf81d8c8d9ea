// Package deployment rolls Deployments out through ReplicaSets with the
// upstream algorithm: one ReplicaSet per pod template (named by its
// pod-template-hash), RollingUpdate within maxSurge/maxUnavailable or
// Recreate, revisions for rollback, proportional scaling, progress
// deadlines, history cleanup and pausing.
package deployment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// Recorder receives events; nil makes the controller record its own.
	Recorder record.EventRecorder
}

// Controller is the Deployment controller.
type Controller struct {
	cfg       Config
	client    kube.Interface
	dLister   appslisters.DeploymentLister
	rsLister  appslisters.ReplicaSetLister
	podLister corelisters.PodLister
	synced    []cache.InformerSynced
	queue     kit.Queue
	events    *kit.Events
	log       *slog.Logger
	now       func() time.Time
}

var (
	controllerKind = appsv1.SchemeGroupVersion.WithKind("Deployment")
	rsKind         = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")
)

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	c := &Controller{cfg: cfg, client: client, queue: kit.NewQueue("deployment"), log: log.With("controller", "deployment"), now: time.Now}
	if cfg.Recorder == nil {
		c.events = kit.NewEvents(client, "deployment-controller")
		c.cfg.Recorder = c.events.Recorder
	}
	dInf, rsInf, podInf := f.Apps().V1().Deployments(), f.Apps().V1().ReplicaSets(), f.Core().V1().Pods()
	c.dLister, c.rsLister, c.podLister = dInf.Lister(), rsInf.Lister(), podInf.Lister()
	c.synced = []cache.InformerSynced{dInf.Informer().HasSynced, rsInf.Informer().HasSynced, podInf.Informer().HasSynced}
	if _, err := dInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
		DeleteFunc: c.enqueue,
	}); err != nil {
		return nil, fmt.Errorf("deployment: handler: %w", err)
	}
	if _, err := rsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.rsChanged,
		UpdateFunc: func(o, n any) {
			if !reflect.DeepEqual(metav1.GetControllerOfNoCopy(o.(*appsv1.ReplicaSet)), metav1.GetControllerOfNoCopy(n.(*appsv1.ReplicaSet))) {
				c.rsChanged(o)
			}
			c.rsChanged(n)
		},
		DeleteFunc: c.rsChanged,
	}); err != nil {
		return nil, fmt.Errorf("deployment: rs handler: %w", err)
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.podDeleted}); err != nil {
		return nil, fmt.Errorf("deployment: pod handler: %w", err)
	}
	return c, nil
}

// Run syncs Deployments with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "deployment", c.queue, c.synced, c.events, workers, c.sync, c.log)
}

func (c *Controller) enqueue(obj any) {
	if k, ok := kit.Key(obj); ok {
		c.queue.Add(k)
	}
}

func (c *Controller) owner(ns string, ref *metav1.OwnerReference) *appsv1.Deployment {
	if ref == nil || ref.Kind != controllerKind.Kind {
		return nil
	}
	d, err := c.dLister.Deployments(ns).Get(ref.Name)
	if err != nil || d.UID != ref.UID {
		return nil
	}
	return d
}

func (c *Controller) rsChanged(obj any) {
	rs, ok := kit.Tombstone(obj).(*appsv1.ReplicaSet)
	if !ok {
		return
	}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		if d := c.owner(rs.Namespace, ref); d != nil {
			c.enqueue(d)
		}
		return
	}
	ds, err := c.dLister.Deployments(rs.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, d := range ds {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(rs.Labels)) {
			c.enqueue(d)
		}
	}
}

// podDeleted wakes Recreate deployments waiting for their old pods to go.
func (c *Controller) podDeleted(obj any) {
	p, ok := kit.Tombstone(obj).(*corev1.Pod)
	if !ok {
		return
	}
	ref := metav1.GetControllerOfNoCopy(p)
	if ref == nil || ref.Kind != rsKind.Kind {
		return
	}
	rs, err := c.rsLister.ReplicaSets(p.Namespace).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return
	}
	if d := c.owner(rs.Namespace, metav1.GetControllerOfNoCopy(rs)); d != nil && d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		c.enqueue(d)
	}
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := c.dLister.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	d := cached.DeepCopy()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		c.cfg.Recorder.Eventf(d, corev1.EventTypeWarning, "SelectorNone", "This deployment has an empty or invalid selector, which would select all pods")
		if d.Status.ObservedGeneration < d.Generation {
			d.Status.ObservedGeneration = d.Generation
			_, err := c.client.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			return err
		}
		return nil
	}
	rsList, err := c.claimReplicaSets(ctx, d, sel)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return c.syncStatusOnly(ctx, d, rsList)
	}
	if err := c.checkPaused(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused {
		return c.scaleOnly(ctx, d, rsList)
	}
	if c.isScalingEvent(d, rsList) {
		return c.scaleOnly(ctx, d, rsList)
	}
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		return c.recreate(ctx, d, rsList)
	default:
		return c.rolling(ctx, d, rsList)
	}
}

// claimReplicaSets adopts and releases ReplicaSets by the selector.
func (c *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment, sel labels.Selector) ([]*appsv1.ReplicaSet, error) {
	all, err := c.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	cl := &kit.Claimer{
		Owner:    d,
		Ref:      kit.ControllerRef(d, controllerKind.GroupVersion().String(), controllerKind.Kind),
		Selector: sel,
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := c.client.AppsV1().ReplicaSets(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
		CanAdopt: func(ctx context.Context) error {
			fresh, err := c.client.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.UID != d.UID || fresh.DeletionTimestamp != nil {
				return fmt.Errorf("deployment %s/%s is gone or being deleted", d.Namespace, d.Name)
			}
			return nil
		},
	}
	return kit.Claim(ctx, cl, all)
}

func (c *Controller) checkPaused(ctx context.Context, d *appsv1.Deployment) error {
	if !hasDeadline(d) {
		return nil
	}
	cond := condition(&d.Status, appsv1.DeploymentProgressing)
	paused := cond != nil && cond.Reason == ReasonPaused
	var nc *appsv1.DeploymentCondition
	switch {
	case d.Spec.Paused && !paused:
		x := newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, ReasonPaused, "Deployment is paused", c.now())
		nc = &x
	case !d.Spec.Paused && paused:
		x := newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, ReasonResumed, "Deployment is resumed", c.now())
		nc = &x
	}
	if nc == nil {
		return nil
	}
	setCondition(&d.Status, *nc)
	out, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update status of %s/%s: %w", d.Namespace, d.Name, err)
	}
	*d = *out
	return nil
}

// isScalingEvent: some active ReplicaSet was sized for another replica count.
func (c *Controller) isScalingEvent(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) bool {
	for _, rs := range activeRS(rsList) {
		v, ok := rs.Annotations[DesiredReplicasAnnotation]
		if ok && v != fmt.Sprint(desired(d)) {
			return true
		}
	}
	return false
}

// scaleOnly handles paused deployments and scaling events: no new RS.
func (c *Controller) scaleOnly(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAll(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	if err := c.scale(ctx, d, newRS, oldRSs); err != nil {
		return err
	}
	if d.Spec.Paused {
		if err := c.cleanup(ctx, d, oldRSs); err != nil {
			return err
		}
	}
	return c.syncStatusOnlyWith(ctx, d, newRS, append(oldRSs, newRS))
}

func (c *Controller) syncStatusOnly(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAll(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	return c.syncStatusOnlyWith(ctx, d, newRS, append(oldRSs, newRS))
}

func (c *Controller) syncStatusOnlyWith(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, all []*appsv1.ReplicaSet) error {
	st := c.calculateStatus(d, newRS, all)
	if reflect.DeepEqual(d.Status, st) {
		return nil
	}
	d.Status = st
	_, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update status of %s/%s: %w", d.Namespace, d.Name, err)
	}
	return nil
}

// getAll splits the deployment's ReplicaSets into the new one (created when
// create is set and none matches the template) and the old ones, and keeps
// the revision annotations in step.
func (c *Controller) getAll(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet, error) {
	existing := findNew(d, rsList)
	var old []*appsv1.ReplicaSet
	for _, rs := range rsList {
		if existing == nil || rs.UID != existing.UID {
			// Copies: scaling writes the API's answer into them.
			old = append(old, rs.DeepCopy())
		}
	}
	newRS, err := c.newReplicaSet(ctx, d, existing, old, create)
	if err != nil {
		return nil, nil, err
	}
	return newRS, old, nil
}

// rsAnnotations copies the deployment's annotations onto rs and sets the
// revision; it reports a change.
func rsAnnotations(d *appsv1.Deployment, rs *appsv1.ReplicaSet, rev string) bool {
	changed := false
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	for k, v := range d.Annotations {
		if skipAnnotations[k] {
			continue
		}
		if rs.Annotations[k] != v {
			rs.Annotations[k] = v
			changed = true
		}
	}
	if cur := rs.Annotations[RevisionAnnotation]; cur != rev {
		var curN, revN int64
		_, _ = fmt.Sscan(cur, &curN)
		_, _ = fmt.Sscan(rev, &revN)
		if cur == "" || curN < revN {
			rs.Annotations[RevisionAnnotation] = rev
			changed = true
		}
	}
	return changed
}

func replicasAnnotations(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	surge, _, _ := Fenceposts(d)
	want, maxR := fmt.Sprint(desired(d)), fmt.Sprint(desired(d)+surge)
	if rs.Annotations[DesiredReplicasAnnotation] == want && rs.Annotations[MaxReplicasAnnotation] == maxR {
		return false
	}
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	rs.Annotations[DesiredReplicasAnnotation] = want
	rs.Annotations[MaxReplicasAnnotation] = maxR
	return true
}

func (c *Controller) newReplicaSet(ctx context.Context, d *appsv1.Deployment, existing *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, error) {
	newRev := fmt.Sprint(maxRevision(old) + 1)
	if existing != nil {
		rs := existing.DeepCopy()
		annChanged := rsAnnotations(d, rs, newRev)
		minReady := rs.Spec.MinReadySeconds != d.Spec.MinReadySeconds
		if annChanged || minReady {
			rs.Spec.MinReadySeconds = d.Spec.MinReadySeconds
			out, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
			if err != nil {
				return nil, fmt.Errorf("update replica set %s: %w", rs.Name, err)
			}
			rs = out
		}
		needStatus := false
		if d.Annotations[RevisionAnnotation] != rs.Annotations[RevisionAnnotation] {
			if err := c.setDeploymentRevision(ctx, d, rs.Annotations[RevisionAnnotation]); err != nil {
				return nil, err
			}
		}
		if condition(&d.Status, appsv1.DeploymentProgressing) == nil && hasDeadline(d) {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonFoundNewRS, fmt.Sprintf("Found new replica set %q", rs.Name), c.now()))
			needStatus = true
		}
		if needStatus {
			out, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			if err != nil {
				return nil, fmt.Errorf("update status of %s/%s: %w", d.Namespace, d.Name, err)
			}
			*d = *out
		}
		return rs, nil
	}
	if !create {
		return nil, nil
	}
	hash := TemplateHash(&d.Spec.Template, d.Status.CollisionCount)
	tmpl := *d.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[HashLabel] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[HashLabel] = hash
	lbls := map[string]string{}
	for k, v := range d.Spec.Template.Labels {
		lbls[k] = v
	}
	lbls[HashLabel] = hash
	zero := int32(0)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            d.Name + "-" + hash,
			Namespace:       d.Namespace,
			Labels:          lbls,
			OwnerReferences: []metav1.OwnerReference{kit.ControllerRef(d, controllerKind.GroupVersion().String(), controllerKind.Kind)},
		},
		Spec: appsv1.ReplicaSetSpec{Replicas: &zero, MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: tmpl},
	}
	all := append(append([]*appsv1.ReplicaSet(nil), old...), rs)
	n := c.newRSReplicas(d, all, rs)
	rs.Spec.Replicas = &n
	rsAnnotations(d, rs, newRev)
	replicasAnnotations(d, rs)
	created, err := c.client.AppsV1().ReplicaSets(d.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		cur, gerr := c.rsLister.ReplicaSets(d.Namespace).Get(rs.Name)
		if gerr == nil && metav1.IsControlledBy(cur, d) && EqualIgnoreHash(&cur.Spec.Template, &d.Spec.Template) {
			return cur, nil
		}
		// A hash collision: bump the count so the next hash differs.
		var cc int32
		if d.Status.CollisionCount != nil {
			cc = *d.Status.CollisionCount
		}
		cc++
		d.Status.CollisionCount = &cc
		if _, uerr := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); uerr != nil {
			return nil, fmt.Errorf("record hash collision of %s/%s: %w", d.Namespace, d.Name, uerr)
		}
		return nil, fmt.Errorf("replica set %s exists with another template: hash collision, retrying", rs.Name)
	case kit.NamespaceTerminating(err):
		return nil, fmt.Errorf("create replica set %s: %w", rs.Name, err)
	case err != nil:
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", rs.Name, err)
		c.cfg.Recorder.Event(d, corev1.EventTypeWarning, ReasonFailedRSCreate, msg)
		if hasDeadline(d) {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, ReasonFailedRSCreate, msg, c.now()))
			_, _ = c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
		}
		return nil, fmt.Errorf("create replica set %s: %w", rs.Name, err)
	}
	if n > 0 {
		c.cfg.Recorder.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", created.Name, n)
	}
	if err := c.setDeploymentRevision(ctx, d, newRev); err != nil {
		return nil, err
	}
	if hasDeadline(d) {
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewRSCreated, fmt.Sprintf("Created new replica set %q", created.Name), c.now()))
		out, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("update status of %s/%s: %w", d.Namespace, d.Name, err)
		}
		*d = *out
	}
	return created, nil
}

func (c *Controller) setDeploymentRevision(ctx context.Context, d *appsv1.Deployment, rev string) error {
	if d.Annotations[RevisionAnnotation] == rev {
		return nil
	}
	cp := d.DeepCopy()
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[RevisionAnnotation] = rev
	out, err := c.client.AppsV1().Deployments(d.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("set revision of %s/%s: %w", d.Namespace, d.Name, err)
	}
	*d = *out
	return nil
}

// newRSReplicas is the size the new ReplicaSet may have now.
func (c *Controller) newRSReplicas(d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) int32 {
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		return desired(d)
	default:
		surge, _, _ := Fenceposts(d)
		current := sumSpec(all)
		maxTotal := desired(d) + surge
		if current >= maxTotal {
			return rsReplicas(newRS)
		}
		up := min(maxTotal-current, desired(d)-rsReplicas(newRS))
		return rsReplicas(newRS) + max(up, 0)
	}
}

// scaleRS sets rs to n replicas with the current annotations; it reports
// whether anything changed.
func (c *Controller) scaleRS(ctx context.Context, d *appsv1.Deployment, rs *appsv1.ReplicaSet, n int32) (bool, *appsv1.ReplicaSet, error) {
	cp := rs.DeepCopy()
	annChanged := replicasAnnotations(d, cp)
	if rsReplicas(rs) == n && !annChanged {
		return false, rs, nil
	}
	from := rsReplicas(rs)
	cp.Spec.Replicas = &n
	out, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
	if err != nil {
		return false, nil, fmt.Errorf("scale replica set %s to %d: %w", rs.Name, n, err)
	}
	if from != n {
		dir := "up"
		if n < from {
			dir = "down"
		}
		c.cfg.Recorder.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, rs.Name, from, n)
	}
	*rs = *out
	return from != n, rs, nil
}

// scale resizes the ReplicaSets after a change of spec.replicas,
// proportionally across active ones during a rolling update.
func (c *Controller) scale(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet) error {
	all := append(append([]*appsv1.ReplicaSet(nil), oldRSs...), newRS)
	active := activeRS(all)
	if len(active) <= 1 {
		target := newRS
		if len(active) == 1 {
			target = active[0]
		} else if target == nil {
			target = latest(oldRSs)
		}
		if target == nil {
			return nil
		}
		_, _, err := c.scaleRS(ctx, d, target, desired(d))
		return err
	}
	if newRS != nil && rsReplicas(newRS) == desired(d) && newRS.Annotations[DesiredReplicasAnnotation] == fmt.Sprint(desired(d)) {
		for _, rs := range activeRS(oldRSs) {
			if _, _, err := c.scaleRS(ctx, d, rs, 0); err != nil {
				return err
			}
		}
		return nil
	}
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		return nil
	}
	surge, _, _ := Fenceposts(d)
	allowed := int32(0)
	if desired(d) > 0 {
		allowed = desired(d) + surge
	}
	current := sumSpec(active)
	toAdd := allowed - current
	if toAdd == 0 {
		return nil
	}
	// Newest first when growing, oldest first when shrinking; larger first.
	byCreation(active)
	if toAdd > 0 {
		for i, j := 0, len(active)-1; i < j; i, j = i+1, j-1 {
			active[i], active[j] = active[j], active[i]
		}
	}
	sizes := make([]int32, len(active))
	var added int32
	for i, rs := range active {
		share := int32(int64(rsReplicas(rs)) * int64(toAdd) / int64(max(current, 1)))
		if toAdd > 0 {
			share = min(share, toAdd-added)
		} else {
			share = max(share, toAdd-added)
		}
		sizes[i] = rsReplicas(rs) + share
		added += share
	}
	if rest := toAdd - added; rest != 0 {
		sizes[0] = max(sizes[0]+rest, 0)
	}
	for i, rs := range active {
		if _, _, err := c.scaleRS(ctx, d, rs, sizes[i]); err != nil {
			return err
		}
	}
	return nil
}

func latest(l []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if len(l) == 0 {
		return nil
	}
	s := append([]*appsv1.ReplicaSet(nil), l...)
	byCreation(s)
	return s[len(s)-1]
}

func (c *Controller) rolling(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAll(ctx, d, rsList, true)
	if err != nil {
		return err
	}
	all := append(append([]*appsv1.ReplicaSet(nil), oldRSs...), newRS)
	// Scale up the new ReplicaSet as far as maxSurge allows.
	if n := rsReplicas(newRS); n != desired(d) {
		target := desired(d)
		if n < desired(d) {
			target = c.newRSReplicas(d, all, newRS)
		}
		scaled, _, err := c.scaleRS(ctx, d, newRS, target)
		if err != nil {
			return err
		}
		if scaled {
			return c.syncRolloutStatus(ctx, d, newRS, all)
		}
	}
	scaled, err := c.reconcileOld(ctx, d, all, activeRS(oldRSs), newRS)
	if err != nil {
		return err
	}
	if scaled {
		return c.syncRolloutStatus(ctx, d, newRS, all)
	}
	if complete(d, &d.Status) {
		if err := c.cleanup(ctx, d, oldRSs); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, d, newRS, all)
}

// reconcileOld scales old ReplicaSets down as far as maxUnavailable allows,
// unhealthy replicas first.
func (c *Controller) reconcileOld(ctx context.Context, d *appsv1.Deployment, all, old []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) (bool, error) {
	if sumSpec(old) == 0 {
		return false, nil
	}
	minAvailable := desired(d) - maxUnavailable(d)
	newUnavailable := rsReplicas(newRS) - newRS.Status.AvailableReplicas
	maxDown := sumSpec(all) - minAvailable - newUnavailable
	if maxDown <= 0 {
		return false, nil
	}
	byCreation(old)
	var cleaned int32
	for _, rs := range old {
		if cleaned >= maxDown {
			break
		}
		unhealthy := rsReplicas(rs) - rs.Status.AvailableReplicas
		if unhealthy <= 0 {
			continue
		}
		down := min(unhealthy, maxDown-cleaned)
		if _, _, err := c.scaleRS(ctx, d, rs, rsReplicas(rs)-down); err != nil {
			return false, err
		}
		cleaned += down
	}
	var available int32
	for _, rs := range all {
		if rs != nil {
			available += min(rs.Status.AvailableReplicas, rsReplicas(rs))
		}
	}
	total := available - minAvailable
	var scaledDown int32
	for _, rs := range old {
		if scaledDown >= total {
			break
		}
		if rsReplicas(rs) == 0 {
			continue
		}
		down := min(rsReplicas(rs), total-scaledDown)
		if _, _, err := c.scaleRS(ctx, d, rs, rsReplicas(rs)-down); err != nil {
			return false, err
		}
		scaledDown += down
	}
	return cleaned+scaledDown > 0, nil
}

func (c *Controller) recreate(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := c.getAll(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	all := append(append([]*appsv1.ReplicaSet(nil), oldRSs...), newRS)
	scaled := false
	for _, rs := range activeRS(oldRSs) {
		s, _, err := c.scaleRS(ctx, d, rs, 0)
		if err != nil {
			return err
		}
		scaled = scaled || s
	}
	if scaled {
		return c.syncRolloutStatus(ctx, d, newRS, all)
	}
	running, err := c.oldPodsRunning(oldRSs)
	if err != nil {
		return err
	}
	if running {
		return c.syncRolloutStatus(ctx, d, newRS, all)
	}
	if newRS == nil {
		newRS, oldRSs, err = c.getAll(ctx, d, rsList, true)
		if err != nil {
			return err
		}
		all = append(append([]*appsv1.ReplicaSet(nil), oldRSs...), newRS)
	}
	if _, _, err := c.scaleRS(ctx, d, newRS, desired(d)); err != nil {
		return err
	}
	if complete(d, &d.Status) {
		if err := c.cleanup(ctx, d, oldRSs); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, d, newRS, all)
}

// oldPodsRunning: some pod of an old ReplicaSet has not finished, including
// pods still terminating.
func (c *Controller) oldPodsRunning(old []*appsv1.ReplicaSet) (bool, error) {
	for _, rs := range old {
		if rs.Status.Replicas > 0 {
			return true, nil
		}
	}
	if len(old) == 0 {
		return false, nil
	}
	pods, err := c.podLister.Pods(old[0].Namespace).List(labels.Everything())
	if err != nil {
		return false, err
	}
	uids := map[types.UID]bool{}
	for _, rs := range old {
		uids[rs.UID] = true
	}
	for _, p := range pods {
		ref := metav1.GetControllerOfNoCopy(p)
		if ref == nil || !uids[ref.UID] {
			continue
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return true, nil
		}
	}
	return false, nil
}

// cleanup deletes the oldest unused ReplicaSets beyond revisionHistoryLimit.
func (c *Controller) cleanup(ctx context.Context, d *appsv1.Deployment, old []*appsv1.ReplicaSet) error {
	if d.Spec.RevisionHistoryLimit == nil {
		return nil
	}
	var dead []*appsv1.ReplicaSet
	for _, rs := range old {
		if rs != nil && rsReplicas(rs) == 0 && rs.Status.Replicas == 0 && rs.DeletionTimestamp == nil {
			dead = append(dead, rs)
		}
	}
	extra := len(dead) - int(*d.Spec.RevisionHistoryLimit)
	if extra <= 0 {
		return nil
	}
	sortByRevision(dead)
	var errs []error
	for _, rs := range dead[:extra] {
		err := c.client.AppsV1().ReplicaSets(rs.Namespace).Delete(ctx, rs.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &rs.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete old replica set %s: %w", rs.Name, err))
		}
	}
	return errors.Join(errs...)
}

func sortByRevision(l []*appsv1.ReplicaSet) {
	byCreation(l)
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && revision(l[j]) < revision(l[j-1]); j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// calculateStatus is the status from the ReplicaSets (without Progressing
// changes, which syncRolloutStatus makes).
func (c *Controller) calculateStatus(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, all []*appsv1.ReplicaSet) appsv1.DeploymentStatus {
	st := appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		CollisionCount:     d.Status.CollisionCount,
		Conditions:         append([]appsv1.DeploymentCondition(nil), d.Status.Conditions...),
	}
	var spec int32
	for _, rs := range all {
		if rs == nil {
			continue
		}
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
		spec += rsReplicas(rs)
	}
	if newRS != nil {
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	st.UnavailableReplicas = max(spec-st.AvailableReplicas, 0)
	if st.AvailableReplicas >= desired(d)-maxUnavailable(d) {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionTrue, ReasonMinAvailable, "Deployment has minimum availability.", c.now()))
	} else {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionFalse, ReasonMinUnavailable, "Deployment does not have minimum availability.", c.now()))
	}
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
	return st
}

// syncRolloutStatus updates the status and the Progressing condition and
// requeues the deployment for its progress deadline.
func (c *Controller) syncRolloutStatus(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, all []*appsv1.ReplicaSet) error {
	st := c.calculateStatus(d, newRS, all)
	now := c.now()
	if !hasDeadline(d) {
		removeCondition(&st, appsv1.DeploymentProgressing)
	}
	cur := condition(&st, appsv1.DeploymentProgressing)
	done := st.Replicas == st.UpdatedReplicas && cur != nil && cur.Reason == ReasonNewRSAvailable
	if hasDeadline(d) && !done && newRS != nil {
		switch {
		case complete(d, &st):
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewRSAvailable, fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name), now))
		case progressing(d, &st):
			nc := newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonRSUpdated, fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name), now)
			if cur != nil && cur.Status == corev1.ConditionTrue {
				nc.LastTransitionTime = cur.LastTransitionTime
			}
			removeCondition(&st, appsv1.DeploymentProgressing)
			st.Conditions = append(st.Conditions, nc)
		case timedOut(d, &st, now):
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, ReasonTimedOut, fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Name), now))
		}
	}
	// Surface pod creation failures of the ReplicaSets.
	var failure *appsv1.ReplicaSetCondition
	for _, rs := range all {
		if rs == nil {
			continue
		}
		for i := range rs.Status.Conditions {
			if rs.Status.Conditions[i].Type == appsv1.ReplicaSetReplicaFailure && rs.Status.Conditions[i].Status == corev1.ConditionTrue {
				failure = &rs.Status.Conditions[i]
			}
		}
	}
	if failure != nil {
		setCondition(&st, newCondition(appsv1.DeploymentReplicaFailure, failure.Status, failure.Reason, failure.Message, now))
	} else {
		removeCondition(&st, appsv1.DeploymentReplicaFailure)
	}
	if reflect.DeepEqual(d.Status, st) {
		c.requeueStuck(d, &st)
		return nil
	}
	d.Status = st
	out, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update status of %s/%s: %w", d.Namespace, d.Name, err)
	}
	c.requeueStuck(out, &out.Status)
	return nil
}

// requeueStuck looks at a deployment again when its deadline passes.
func (c *Controller) requeueStuck(d *appsv1.Deployment, st *appsv1.DeploymentStatus) {
	cur := condition(st, appsv1.DeploymentProgressing)
	if !hasDeadline(d) || cur == nil || cur.Reason == ReasonNewRSAvailable || cur.Reason == ReasonTimedOut || complete(d, st) {
		return
	}
	after := cur.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Sub(c.now())
	k, _ := kit.Key(d)
	if after < time.Second {
		after = time.Second
	}
	c.queue.AddAfter(k, after)
}
