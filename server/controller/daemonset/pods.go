package daemonset

import (
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"

	"github.com/orch-dev/orch/server/controller/internal/kit"
)

func meta(obj any) (metav1.Object, error) {
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return nil, fmt.Errorf("object meta: %w", err)
	}
	return m, nil
}

// withDefaultTolerations adds the tolerations upstream gives every
// DaemonSet pod, so it stays on nodes that are not ready, unreachable,
// under pressure or cordoned.
func withDefaultTolerations(spec *corev1.PodSpec) {
	add := func(key string, effect corev1.TaintEffect) {
		t := corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: effect}
		for _, have := range spec.Tolerations {
			if have.MatchToleration(&t) {
				return
			}
		}
		spec.Tolerations = append(spec.Tolerations, t)
	}
	add(corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute)
	add(corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute)
	add(corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule)
	add(corev1.TaintNodeMemoryPressure, corev1.TaintEffectNoSchedule)
	add(corev1.TaintNodePIDPressure, corev1.TaintEffectNoSchedule)
	add(corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule)
	if spec.HostNetwork {
		add(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)
	}
}

// placement decides, for one DaemonSet, which nodes run its pod.
type placement struct {
	affinity nodeaffinity.RequiredNodeAffinity
	tols     []corev1.Toleration
	log      logr.Logger
}

func newPlacement(ds *appsv1.DaemonSet) *placement {
	spec := ds.Spec.Template.Spec.DeepCopy()
	withDefaultTolerations(spec)
	return &placement{
		affinity: nodeaffinity.NewRequiredNodeAffinity(spec.NodeSelector, spec.Affinity),
		tols:     spec.Tolerations,
		log:      logr.Discard(),
	}
}

// check says whether a new daemon pod should be placed on node, and
// whether an existing one may keep running there (a NoSchedule taint
// keeps new pods off but lets running ones stay; NoExecute does not).
func (p *placement) check(node *corev1.Node) (shouldRun, shouldContinue bool) {
	if ok, err := p.affinity.Match(node); err != nil || !ok {
		return false, false
	}
	shouldRun, shouldContinue = true, true
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated := false
		for j := range p.tols {
			if p.tols[j].ToleratesTaint(p.log, t, true) {
				tolerated = true
				break
			}
		}
		if tolerated {
			continue
		}
		shouldRun = false
		if t.Effect == corev1.TaintEffectNoExecute {
			return false, false
		}
	}
	return shouldRun, shouldContinue
}

// newPod is the daemon pod of ds for node, of the template revision hash.
func newPod(ds *appsv1.DaemonSet, node, hash string) *corev1.Pod {
	tpl := ds.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    ds.Name + "-",
			Namespace:       ds.Namespace,
			Labels:          map[string]string{},
			Annotations:     tpl.Annotations,
			Finalizers:      tpl.Finalizers,
			OwnerReferences: []metav1.OwnerReference{kit.ControllerRef(ds, controllerKind.GroupVersion().String(), controllerKind.Kind)},
		},
		Spec: tpl.Spec,
	}
	for k, v := range tpl.Labels {
		pod.Labels[k] = v
	}
	pod.Labels[hashLabel] = hash
	withDefaultTolerations(&pod.Spec)
	pinToNode(&pod.Spec, node)
	return pod
}

// pinToNode replaces the pod's required node affinity by one term
// selecting node by metadata.name, keeping preferred terms (upstream's
// ReplaceDaemonSetPodNodeNameNodeAffinity).
func pinToNode(spec *corev1.PodSpec, node string) {
	term := corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{
		Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node},
	}}}
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}}
}

// targetNode is the node a daemon pod runs on or is pinned to.
func targetNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 {
		return ""
	}
	for _, f := range terms[0].MatchFields {
		if f.Key == metav1.ObjectNameField && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
			return f.Values[0]
		}
	}
	return ""
}

// failedBackoff spaces out the replacement of daemon pods that keep
// failing on a node (per DaemonSet and node, doubling).
type failedBackoff struct {
	mu      sync.Mutex
	initial time.Duration
	limit   time.Duration
	entries map[string]backoffEntry
}

type backoffEntry struct {
	delay time.Duration
	until time.Time
}

func newFailedBackoff(initial, limit time.Duration) *failedBackoff {
	return &failedBackoff{initial: initial, limit: limit, entries: map[string]backoffEntry{}}
}

// wait is how long key still has to wait before a replacement (0: go).
func (b *failedBackoff) wait(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

// fail records a failure of key and starts (or doubles) its back-off.
func (b *failedBackoff) fail(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	if e.delay == 0 {
		e.delay = b.initial
	} else {
		e.delay = min(2*e.delay, b.limit)
	}
	e.until = now.Add(e.delay)
	b.entries[key] = e
}

// gc forgets entries whose back-off ended long ago.
func (b *failedBackoff) gc(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.entries {
		if now.Sub(e.until) > 2*b.limit {
			delete(b.entries, k)
		}
	}
}
