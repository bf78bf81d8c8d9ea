// Package scheduler assigns pending pods to nodes, as kube-scheduler's
// default profile does: it filters the nodes a pod may run on (node name,
// node selector and required affinity, taints, cordons, readiness, resource
// requests, host ports), scores the rest (least requested, balanced
// allocation, spreading pods of one owner, preferred affinity,
// PreferNoSchedule taints) and binds the pod to the best one through the
// pods/binding subresource. Pods that fit nowhere get the upstream
// Unschedulable condition and event and wait, with back-off, for the
// cluster to change.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/orch-dev/orch/internal/events"
	"github.com/orch-dev/orch/internal/kube"
)

// DefaultSchedulerName is the spec.schedulerName this scheduler serves.
const DefaultSchedulerName = corev1.DefaultSchedulerName

// Config tunes the scheduler; the zero value is upstream's defaults.
type Config struct {
	// SchedulerName is the spec.schedulerName served (default-scheduler);
	// pods with an empty schedulerName are served too.
	SchedulerName string
	// PercentageOfNodesToScore bounds how many feasible nodes a cycle
	// looks for in large clusters; 0 is upstream's adaptive share.
	PercentageOfNodesToScore int
	// BindConcurrency caps binding calls in flight (256: the API server
	// commits concurrent writes together, so more in flight binds faster).
	BindConcurrency int
	// InitialBackoff and MaxBackoff bound the per-pod retry back-off
	// (1 s and 10 s).
	InitialBackoff, MaxBackoff time.Duration
	// UnschedulableRetry is how long an unschedulable pod waits for a
	// cluster event before it is retried anyway (60 s).
	UnschedulableRetry time.Duration
	// AssumedPodTTL is how long a pod bound by this scheduler counts
	// against its node without the informer confirming it (30 s).
	AssumedPodTTL time.Duration
	// ReportRate and ReportBurst bound how fast the reasons pods cannot be
	// scheduled (event and PodScheduled=False condition) are written: 100
	// a second in bursts of 100. kube-scheduler's whole client is bounded
	// to 50 and 100 by default; bindings are not bounded here.
	ReportRate  float64
	ReportBurst int
	// Busy, if set, says whether the API server is busy with its clients'
	// requests; reports then go at BusyReportRate (5 a second) at most.
	Busy           func() bool
	BusyReportRate float64
	// Recorder receives events; nil makes the scheduler record its own.
	Recorder record.EventRecorder
}

func (c *Config) setDefaults() {
	if c.SchedulerName == "" {
		c.SchedulerName = DefaultSchedulerName
	}
	if c.BindConcurrency <= 0 {
		c.BindConcurrency = 256
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = time.Second
	}
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = max(10*time.Second, c.InitialBackoff)
	}
	if c.UnschedulableRetry <= 0 {
		c.UnschedulableRetry = 60 * time.Second
	}
	if c.AssumedPodTTL <= 0 {
		c.AssumedPodTTL = 30 * time.Second
	}
	if c.ReportRate <= 0 {
		c.ReportRate = 100
	}
	if c.ReportBurst <= 0 {
		c.ReportBurst = 100
	}
	if c.BusyReportRate <= 0 {
		c.BusyReportRate = 5
	}
}

// Scheduler is the pod scheduler.
type Scheduler struct {
	cfg         Config
	client      kube.Interface
	pods        cache.Indexer
	synced      []cache.InformerSynced
	cache       *nodeCache
	alg         *algorithm
	queue       workqueue.TypedRateLimitingInterface[string]
	unsched     *parking
	reports     *reporter
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	bindSem     chan struct{}
	binds       sync.WaitGroup
	log         *slog.Logger
	now         func() time.Time
}

// New wires a scheduler to the pod and node informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Scheduler, error) {
	cfg.setDefaults()
	log = log.With("component", "scheduler")
	s := &Scheduler{
		cfg:    cfg,
		client: client,
		cache:  newCache(),
		alg:    newAlgorithm(cfg.PercentageOfNodesToScore, logr.FromSlogHandler(log.Handler())),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.InitialBackoff, cfg.MaxBackoff),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "scheduler"}),
		unsched:  newParking(),
		reports:  newReporter(cfg.ReportRate, cfg.ReportBurst, cfg.BusyReportRate, cfg.Busy),
		recorder: cfg.Recorder,
		bindSem:  make(chan struct{}, cfg.BindConcurrency),
		log:      log,
		now:      time.Now,
	}
	if s.recorder == nil {
		s.broadcaster = events.NewBroadcaster()
		s.recorder = s.broadcaster.NewRecorder(kube.Scheme(), corev1.EventSource{Component: cfg.SchedulerName})
	}
	podInf := f.Core().V1().Pods().Informer()
	nodeInf := f.Core().V1().Nodes().Informer()
	s.pods = podInf.GetIndexer()
	s.synced = []cache.InformerSynced{podInf.HasSynced, nodeInf.HasSynced}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.podAdded,
		UpdateFunc: s.podUpdated,
		DeleteFunc: s.podDeleted,
	}); err != nil {
		return nil, fmt.Errorf("scheduler: pod handler: %w", err)
	}
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.nodeAdded,
		UpdateFunc: s.nodeUpdated,
		DeleteFunc: s.nodeDeleted,
	}); err != nil {
		return nil, fmt.Errorf("scheduler: node handler: %w", err)
	}
	return s, nil
}

// Run schedules pods until ctx ends. The caller starts the informer
// factory (before or after Run).
func (s *Scheduler) Run(ctx context.Context) error {
	if s.broadcaster != nil {
		w := s.broadcaster.StartRecordingToSink(kube.EventSink{Client: s.client.CoreV1()})
		defer s.broadcaster.Shutdown()
		defer w.Stop()
	}
	defer s.binds.Wait()
	defer s.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return fmt.Errorf("scheduler: caches did not sync: %w", context.Cause(ctx))
	}
	s.log.Info("scheduler started", "name", s.cfg.SchedulerName)
	go s.housekeeping(ctx)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		s.reports.run(ctx, s.writeReport)
	}()
	// The last report is written (or dropped) before the event
	// broadcaster it records to shuts down.
	defer func() { <-reported }()
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for s.scheduleNext(ctx) {
	}
	return nil
}

// housekeeping retries pods parked as unschedulable for too long and drops
// assumed pods the informer never confirmed.
func (s *Scheduler) housekeeping(ctx context.Context) {
	period := min(time.Second, s.cfg.UnschedulableRetry/2)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		s.unsched.moveOlder(now.Add(-s.cfg.UnschedulableRetry), s.queue)
		if n := s.cache.expire(now, s.cfg.AssumedPodTTL); n > 0 {
			s.log.Warn("assumed pods expired without their binding being observed", "count", n)
			s.unsched.moveAll(s.queue)
		}
	}
}

func (s *Scheduler) responsible(p *corev1.Pod) bool {
	return p.Spec.SchedulerName == "" || p.Spec.SchedulerName == s.cfg.SchedulerName
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (s *Scheduler) podAdded(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	switch {
	case p.Spec.NodeName != "":
		if !terminal(p) {
			s.cache.setPod(p)
		}
	case s.responsible(p) && p.DeletionTimestamp == nil && !terminal(p):
		if k, err := cache.MetaNamespaceKeyFunc(p); err == nil {
			s.queue.Add(k)
		}
	}
}

func (s *Scheduler) podUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	p, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	if p.Spec.NodeName != "" {
		if terminal(p) {
			s.cache.removePod(p.UID)
			if !terminal(old) {
				s.unsched.moveAll(s.queue) // its resources are free
			}
			return
		}
		s.cache.setPod(p)
		return
	}
	if !s.responsible(p) || p.DeletionTimestamp != nil || terminal(p) {
		s.unsched.remove(podKey(p))
		return
	}
	// Status writes (ours among them) do not change where a pod fits.
	if apiequality.Semantic.DeepEqual(old.Spec, p.Spec) && apiequality.Semantic.DeepEqual(old.Labels, p.Labels) {
		return
	}
	k := podKey(p)
	s.unsched.remove(k)
	s.queue.Add(k)
}

func (s *Scheduler) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if s.cache.known(p.UID) {
		s.cache.removePod(p.UID)
		s.unsched.moveAll(s.queue)
	}
	s.unsched.remove(podKey(p))
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func (s *Scheduler) nodeAdded(obj any) {
	if n, ok := obj.(*corev1.Node); ok {
		s.cache.setNode(n)
		s.unsched.moveAll(s.queue)
	}
}

func (s *Scheduler) nodeUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return
	}
	s.cache.setNode(n)
	if nodeSchedulingChanged(old, n) {
		s.unsched.moveAll(s.queue)
	}
}

// nodeSchedulingChanged reports a change that may let a pod fit: not the
// heartbeats that update a node every few seconds.
func nodeSchedulingChanged(old, n *corev1.Node) bool {
	if old.Spec.Unschedulable != n.Spec.Unschedulable ||
		!apiequality.Semantic.DeepEqual(old.Spec.Taints, n.Spec.Taints) ||
		!apiequality.Semantic.DeepEqual(old.Labels, n.Labels) ||
		!apiequality.Semantic.DeepEqual(old.Status.Allocatable, n.Status.Allocatable) {
		return true
	}
	status := func(n *corev1.Node) map[corev1.NodeConditionType]corev1.ConditionStatus {
		m := make(map[corev1.NodeConditionType]corev1.ConditionStatus, len(n.Status.Conditions))
		for _, c := range n.Status.Conditions {
			m[c.Type] = c.Status
		}
		return m
	}
	return !apiequality.Semantic.DeepEqual(status(old), status(n))
}

func (s *Scheduler) nodeDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if n, ok := obj.(*corev1.Node); ok {
		s.cache.deleteNode(n.Name)
	}
}

// scheduleNext runs one scheduling cycle; false once the queue shut down.
func (s *Scheduler) scheduleNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	s.scheduleOne(ctx, key)
	return true
}

func (s *Scheduler) scheduleOne(ctx context.Context, key string) {
	obj, exists, err := s.pods.GetByKey(key)
	if err != nil || !exists {
		s.queue.Forget(key)
		return
	}
	p := obj.(*corev1.Pod)
	if p.Spec.NodeName != "" || p.DeletionTimestamp != nil || terminal(p) || !s.responsible(p) {
		s.queue.Forget(key)
		return
	}
	if s.cache.known(p.UID) {
		return // assumed, its binding is in flight
	}
	seq := s.unsched.sequence()
	pi, err := newPodInfo(p, key, s.cache.nz)
	if err != nil {
		s.failed(ctx, p, key, seq, "SchedulerError", fmt.Sprintf("invalid pod: %v", err))
		return
	}
	s.cache.mu.Lock()
	n, diag := s.alg.schedule(s.cache, pi)
	if n != nil {
		s.cache.assumeLocked(pi, n)
	}
	s.cache.mu.Unlock()
	if n == nil {
		s.failed(ctx, p, key, seq, corev1.PodReasonUnschedulable, diag.message())
		return
	}
	select {
	case s.bindSem <- struct{}{}:
	case <-ctx.Done():
		s.cache.forget(p.UID)
		return
	}
	s.binds.Add(1)
	go func() {
		defer s.binds.Done()
		defer func() { <-s.bindSem }()
		s.bind(ctx, p, key, n.name)
	}()
}

// bind posts the binding of p to node; on failure the assumption is undone
// and the pod retried with back-off.
func (s *Scheduler) bind(ctx context.Context, p *corev1.Pod, key, node string) {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	err := s.client.CoreV1().Pods(p.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if err == nil {
		s.cache.finishBinding(p.UID, s.now())
		s.queue.Forget(key)
		s.recorder.Eventf(p, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", p.Namespace, p.Name, node)
		return
	}
	s.cache.forget(p.UID)
	if ctx.Err() != nil {
		return
	}
	if apierrors.IsNotFound(err) {
		s.queue.Forget(key)
		return
	}
	s.log.Warn("binding failed", "pod", key, "node", node, "err", err)
	s.recorder.Eventf(p, corev1.EventTypeWarning, "FailedScheduling", "Binding rejected: %v", err)
	s.queue.AddRateLimited(key)
}

// failed records why p cannot be scheduled and parks it until the cluster
// changes (or retries it with back-off when it already did).
func (s *Scheduler) failed(ctx context.Context, p *corev1.Pod, key string, seq uint64, reason, msg string) {
	s.reports.add(key, report{uid: p.UID, reason: reason, msg: msg})
	s.unsched.park(key, seq, s.now(), s.queue)
}

// writeReport records the event and sets the condition of a report, if its
// pod still waits to be scheduled: the same pod (UID), not bound, not
// assumed by a binding in flight, not being deleted.
func (s *Scheduler) writeReport(ctx context.Context, key string, rep report) {
	obj, exists, err := s.pods.GetByKey(key)
	if err != nil || !exists {
		return
	}
	p := obj.(*corev1.Pod)
	if p.UID != rep.uid || p.Spec.NodeName != "" || p.DeletionTimestamp != nil || s.cache.known(p.UID) {
		return
	}
	s.recorder.Event(p, corev1.EventTypeWarning, "FailedScheduling", rep.msg)
	err = s.setUnschedulable(ctx, p, rep.reason, rep.msg)
	switch {
	case apierrors.IsConflict(err):
		// The pod changed since the informer's copy: report on the
		// newer one (the binding's own change ends it above).
		s.reports.add(key, rep)
	case err != nil && ctx.Err() == nil:
		s.log.Warn("updating pod condition", "pod", key, "err", err)
	}
}

// setUnschedulable writes PodScheduled=False unless the pod says so already.
func (s *Scheduler) setUnschedulable(ctx context.Context, p *corev1.Pod, reason, msg string) error {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == msg {
			return nil
		}
	}
	patch, err := conditionPatch(p, corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(s.now()),
	})
	if err != nil {
		return err
	}
	_, err = s.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("patch status of %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
