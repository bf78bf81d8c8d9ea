package agent

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// Container waiting reasons, as the kubelet reports them.
const (
	reasonContainerCreating  = "ContainerCreating"
	reasonPodInitializing    = "PodInitializing"
	reasonCrashLoopBackOff   = "CrashLoopBackOff"
	reasonErrImagePull       = "ErrImagePull"
	reasonImagePullBackOff   = "ImagePullBackOff"
	reasonErrImageNeverPull  = "ErrImageNeverPull"
	reasonInvalidImageName   = "InvalidImageName"
	reasonCreateConfigError  = "CreateContainerConfigError"
	reasonCreateError        = "CreateContainerError"
	reasonRunContainerError  = "RunContainerError"
	reasonContainerCannotRun = "ContainerCannotRun"
)

// qosClass computes a pod's QoS class as upstream's GetPodQOS: BestEffort
// when no container requests or limits cpu or memory, Guaranteed when
// every container limits both and requests equal limits, else Burstable.
func qosClass(spec *corev1.PodSpec) corev1.PodQOSClass {
	requests, limits := corev1.ResourceList{}, corev1.ResourceList{}
	guaranteed := true
	add := func(dst corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
		if cur, ok := dst[name]; ok {
			cur.Add(q)
			dst[name] = cur
		} else {
			dst[name] = q.DeepCopy()
		}
	}
	all := make([]corev1.Container, 0, len(spec.InitContainers)+len(spec.Containers))
	all = append(all, spec.InitContainers...)
	all = append(all, spec.Containers...)
	for _, c := range all {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[name]
			lim, hasLim := c.Resources.Limits[name]
			if hasReq && !req.IsZero() {
				add(requests, name, req)
			}
			if hasLim && !lim.IsZero() {
				add(limits, name, lim)
			} else {
				guaranteed = false
			}
			if hasLim && hasReq && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	if guaranteed && len(limits) == 2 {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// podPhase computes the phase from the container statuses as upstream's
// getPhase. initFailed means an init container failed for good.
func podPhase(spec *corev1.PodSpec, init, app []corev1.ContainerStatus, initDone, initFailed bool) corev1.PodPhase {
	if initFailed {
		return corev1.PodFailed
	}
	if !initDone {
		return corev1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for _, s := range app {
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.State.Waiting != nil:
			if s.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		switch spec.RestartPolicy {
		case corev1.RestartPolicyAlways:
			return corev1.PodRunning
		case corev1.RestartPolicyOnFailure:
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodRunning
		default:
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodFailed
		}
	}
	return corev1.PodPending
}

// podConditions computes the kubelet-owned conditions, keeping the
// transition times of old ones whose status did not change.
func podConditions(old []corev1.PodCondition, phase corev1.PodPhase, sandboxReady, initDone bool,
	init, app []corev1.ContainerStatus, now metav1.Time) []corev1.PodCondition {
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: now}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		for _, o := range old {
			if o.Type == t && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
				c.LastProbeTime = o.LastProbeTime
			}
		}
		return c
	}
	var notInit, notReady []string
	for _, s := range init {
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			notInit = append(notInit, s.Name)
		}
	}
	for _, s := range app {
		if !s.Ready {
			notReady = append(notReady, s.Name)
		}
	}
	initMsg := ""
	if len(notInit) > 0 {
		initMsg = fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))
	}
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		readyReason, readyMsg = "PodCompleted", ""
		notReady = append(notReady, "")
	}
	ready := len(notReady) == 0 && len(app) > 0 && initDone
	initOK := initDone || phase == corev1.PodSucceeded
	out := []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sandboxReady, "", ""),
		cond(corev1.PodInitialized, initOK, "ContainersNotInitialized", initMsg),
		cond(corev1.ContainersReady, ready, readyReason, readyMsg),
		cond(corev1.PodReady, ready, readyReason, readyMsg),
		cond(corev1.PodScheduled, true, "", ""),
	}
	// Conditions the kubelet does not own (readiness gates, DisruptionTarget) stay.
	for _, o := range old {
		switch o.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled:
		default:
			out = append(out, o)
		}
	}
	return out
}
