package deployment

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

// Annotations and labels a Deployment and its ReplicaSets carry, as upstream.
const (
	RevisionAnnotation        = "deployment.kubernetes.io/revision"
	RevisionHistoryAnnotation = "deployment.kubernetes.io/revision-history"
	DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	MaxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
	rollbackToAnnotation      = "deprecated.deployment.rollback.to"
	lastAppliedAnnotation     = "kubectl.kubernetes.io/last-applied-configuration"
	// HashLabel tells the pods of one template apart.
	HashLabel = appsv1.DefaultDeploymentUniqueLabelKey
)

// Reasons of the Progressing and Available conditions, as upstream.
const (
	ReasonNewRSCreated      = "NewReplicaSetCreated"
	ReasonFoundNewRS        = "FoundNewReplicaSet"
	ReasonRSUpdated         = "ReplicaSetUpdated"
	ReasonNewRSAvailable    = "NewReplicaSetAvailable"
	ReasonTimedOut          = "ProgressDeadlineExceeded"
	ReasonPaused            = "DeploymentPaused"
	ReasonResumed           = "DeploymentResumed"
	ReasonMinAvailable      = "MinimumReplicasAvailable"
	ReasonMinUnavailable    = "MinimumReplicasUnavailable"
	ReasonFailedRSCreate    = "ReplicaSetCreateError"
	reasonReplicaFailure    = "ReplicaSetReplicaFailure"
	annotationSkipRevision  = RevisionAnnotation
	annotationSkipHistory   = RevisionHistoryAnnotation
	annotationSkipDesired   = DesiredReplicasAnnotation
	annotationSkipMax       = MaxReplicasAnnotation
	annotationSkipRollback  = rollbackToAnnotation
	annotationSkipLastApply = lastAppliedAnnotation
)

var skipAnnotations = map[string]bool{
	annotationSkipRevision: true, annotationSkipHistory: true, annotationSkipDesired: true,
	annotationSkipMax: true, annotationSkipRollback: true, annotationSkipLastApply: true,
}

// TemplateHash is the pod-template-hash of a template and collision count:
// FNV-32a over the template's JSON without the hash label, safely encoded.
func TemplateHash(t *corev1.PodTemplateSpec, collisions *int32) string {
	cp := t.DeepCopy()
	delete(cp.Labels, HashLabel)
	h := fnv.New32a()
	b, _ := json.Marshal(cp)
	_, _ = h.Write(b)
	if collisions != nil {
		_, _ = fmt.Fprintf(h, "/%d", *collisions)
	}
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// EqualIgnoreHash compares two templates without their hash labels.
func EqualIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, HashLabel)
	delete(b.Labels, HashLabel)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

func desired(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func rsReplicas(rs *appsv1.ReplicaSet) int32 {
	if rs == nil || rs.Spec.Replicas == nil {
		return 0
	}
	return *rs.Spec.Replicas
}

// Fenceposts resolves maxSurge (rounded up) and maxUnavailable (rounded
// down) against the desired replicas; both zero becomes one unavailable.
func Fenceposts(d *appsv1.Deployment) (surge, unavailable int32, err error) {
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate == nil {
		return 0, 0, nil
	}
	ru := d.Spec.Strategy.RollingUpdate
	s, u := intstr.FromString("25%"), intstr.FromString("25%")
	if ru.MaxSurge != nil {
		s = *ru.MaxSurge
	}
	if ru.MaxUnavailable != nil {
		u = *ru.MaxUnavailable
	}
	n := int(desired(d))
	sv, err := intstr.GetScaledValueFromIntOrPercent(&s, n, true)
	if err != nil {
		return 0, 0, fmt.Errorf("maxSurge: %w", err)
	}
	uv, err := intstr.GetScaledValueFromIntOrPercent(&u, n, false)
	if err != nil {
		return 0, 0, fmt.Errorf("maxUnavailable: %w", err)
	}
	if sv == 0 && uv == 0 {
		uv = 1
	}
	return int32(sv), int32(uv), nil
}

func maxUnavailable(d *appsv1.Deployment) int32 {
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || desired(d) == 0 {
		return 0
	}
	_, u, _ := Fenceposts(d)
	return min(u, desired(d))
}

func revision(obj metav1.Object) int64 {
	v, err := strconv.ParseInt(obj.GetAnnotations()[RevisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

func maxRevision(l []*appsv1.ReplicaSet) int64 {
	var m int64
	for _, rs := range l {
		m = max(m, revision(rs))
	}
	return m
}

func activeRS(l []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, rs := range l {
		if rs != nil && rsReplicas(rs) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

func sumSpec(l []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range l {
		n += rsReplicas(rs)
	}
	return n
}

func byCreation(l []*appsv1.ReplicaSet) {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i], l[j]
		if a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.Name < b.Name
		}
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	})
}

// findNew is the oldest ReplicaSet whose template equals the deployment's.
func findNew(d *appsv1.Deployment, l []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	sorted := append([]*appsv1.ReplicaSet(nil), l...)
	byCreation(sorted)
	for _, rs := range sorted {
		if EqualIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			return rs
		}
	}
	return nil
}

func condition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func newCondition(t appsv1.DeploymentConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) appsv1.DeploymentCondition {
	ts := metav1.NewTime(now)
	return appsv1.DeploymentCondition{Type: t, Status: s, Reason: reason, Message: msg, LastUpdateTime: ts, LastTransitionTime: ts}
}

// setCondition adds or replaces a condition, keeping the transition time
// when the status does not change (and the whole condition when nothing does).
func setCondition(st *appsv1.DeploymentStatus, c appsv1.DeploymentCondition) {
	cur := condition(st, c.Type)
	if cur != nil && cur.Status == c.Status && cur.Reason == c.Reason && cur.Message == c.Message {
		return
	}
	if cur != nil && cur.Status == c.Status {
		c.LastTransitionTime = cur.LastTransitionTime
	}
	removeCondition(st, c.Type)
	st.Conditions = append(st.Conditions, c)
}

func removeCondition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) {
	out := st.Conditions[:0:0]
	for _, c := range st.Conditions {
		if c.Type != t {
			out = append(out, c)
		}
	}
	st.Conditions = out
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
}

func hasDeadline(d *appsv1.Deployment) bool {
	return d.Spec.ProgressDeadlineSeconds != nil && *d.Spec.ProgressDeadlineSeconds != 1<<31-1
}

// complete: every replica is updated and available, and the spec observed.
func complete(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	n := desired(d)
	return st.UpdatedReplicas == n && st.Replicas == n && st.AvailableReplicas == n && st.ObservedGeneration >= d.Generation
}

// progressing: the new status shows progress over the stored one.
func progressing(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	old := d.Status
	return st.UpdatedReplicas > old.UpdatedReplicas || st.Replicas-st.UpdatedReplicas < old.Replicas-old.UpdatedReplicas ||
		st.ReadyReplicas > old.ReadyReplicas || st.AvailableReplicas > old.AvailableReplicas
}

func timedOut(d *appsv1.Deployment, st *appsv1.DeploymentStatus, now time.Time) bool {
	if !hasDeadline(d) {
		return false
	}
	c := condition(st, appsv1.DeploymentProgressing)
	if c == nil || c.Reason == ReasonNewRSAvailable {
		return false
	}
	if c.Reason == ReasonTimedOut {
		return true
	}
	return c.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Before(now)
}
