package agent

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func res(req, lim map[corev1.ResourceName]string) corev1.ResourceRequirements {
	r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for k, v := range req {
		r.Requests[k] = resource.MustParse(v)
	}
	for k, v := range lim {
		r.Limits[k] = resource.MustParse(v)
	}
	return r
}

func TestQOSClass(t *testing.T) {
	cpu, mem := corev1.ResourceCPU, corev1.ResourceMemory
	for name, tc := range map[string]struct {
		ctrs []corev1.ResourceRequirements
		want corev1.PodQOSClass
	}{
		"none":                  {[]corev1.ResourceRequirements{{}}, corev1.PodQOSBestEffort},
		"only storage":          {[]corev1.ResourceRequirements{res(map[corev1.ResourceName]string{corev1.ResourceEphemeralStorage: "1Gi"}, nil)}, corev1.PodQOSBestEffort},
		"equal":                 {[]corev1.ResourceRequirements{res(map[corev1.ResourceName]string{cpu: "1", mem: "1Gi"}, map[corev1.ResourceName]string{cpu: "1", mem: "1Gi"})}, corev1.PodQOSGuaranteed},
		"limits only":           {[]corev1.ResourceRequirements{res(nil, map[corev1.ResourceName]string{cpu: "1", mem: "1Gi"})}, corev1.PodQOSGuaranteed},
		"request below limit":   {[]corev1.ResourceRequirements{res(map[corev1.ResourceName]string{cpu: "500m", mem: "1Gi"}, map[corev1.ResourceName]string{cpu: "1", mem: "1Gi"})}, corev1.PodQOSBurstable},
		"memory only":           {[]corev1.ResourceRequirements{res(nil, map[corev1.ResourceName]string{mem: "1Gi"})}, corev1.PodQOSBurstable},
		"one of two guaranteed": {[]corev1.ResourceRequirements{res(nil, map[corev1.ResourceName]string{cpu: "1", mem: "1Gi"}), {}}, corev1.PodQOSBurstable},
		"requests only":         {[]corev1.ResourceRequirements{res(map[corev1.ResourceName]string{cpu: "100m"}, nil)}, corev1.PodQOSBurstable},
	} {
		spec := &corev1.PodSpec{}
		for _, r := range tc.ctrs {
			spec.Containers = append(spec.Containers, corev1.Container{Resources: r})
		}
		if got := qosClass(spec); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
}

func running(name string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, Ready: true}
}

func exited(name string, code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

func waiting(name string, crashed bool) corev1.ContainerStatus {
	s := corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "X"}}}
	if crashed {
		s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1}
	}
	return s
}

func TestPodPhase(t *testing.T) {
	always, never, onFail := corev1.RestartPolicyAlways, corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure
	for name, tc := range map[string]struct {
		policy             corev1.RestartPolicy
		app                []corev1.ContainerStatus
		initDone, initFail bool
		want               corev1.PodPhase
	}{
		"creating":              {always, []corev1.ContainerStatus{waiting("a", false)}, true, false, corev1.PodPending},
		"running":               {always, []corev1.ContainerStatus{running("a")}, true, false, corev1.PodRunning},
		"init pending":          {always, []corev1.ContainerStatus{waiting("a", false)}, false, false, corev1.PodPending},
		"init failed":           {never, []corev1.ContainerStatus{waiting("a", false)}, false, true, corev1.PodFailed},
		"crashloop":             {always, []corev1.ContainerStatus{waiting("a", true)}, true, false, corev1.PodRunning},
		"never succeeded":       {never, []corev1.ContainerStatus{exited("a", 0), exited("b", 0)}, true, false, corev1.PodSucceeded},
		"never failed":          {never, []corev1.ContainerStatus{exited("a", 0), exited("b", 2)}, true, false, corev1.PodFailed},
		"never one running":     {never, []corev1.ContainerStatus{exited("a", 2), running("b")}, true, false, corev1.PodRunning},
		"onfailure succeeded":   {onFail, []corev1.ContainerStatus{exited("a", 0)}, true, false, corev1.PodSucceeded},
		"onfailure backing off": {onFail, []corev1.ContainerStatus{waiting("a", true)}, true, false, corev1.PodRunning},
		"always exited":         {always, []corev1.ContainerStatus{exited("a", 0)}, true, false, corev1.PodRunning},
	} {
		spec := &corev1.PodSpec{RestartPolicy: tc.policy}
		if got := podPhase(spec, nil, tc.app, tc.initDone, tc.initFail); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
}

func TestPodConditions(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	notReady := running("b")
	notReady.Ready = false
	conds := podConditions(nil, corev1.PodRunning, true, true, []corev1.ContainerStatus{exited("init", 0)},
		[]corev1.ContainerStatus{running("a"), notReady}, t0)
	get := func(cs []corev1.PodCondition, ty corev1.PodConditionType) corev1.PodCondition {
		for _, c := range cs {
			if c.Type == ty {
				return c
			}
		}
		t.Fatalf("no %s condition", ty)
		return corev1.PodCondition{}
	}
	if c := get(conds, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotReady" || c.Message != "containers with unready status: [b]" {
		t.Errorf("Ready = %+v", c)
	}
	if c := get(conds, corev1.PodInitialized); c.Status != corev1.ConditionTrue {
		t.Errorf("Initialized = %+v", c)
	}
	// Same status later keeps the transition time; a change takes the new one.
	conds2 := podConditions(conds, corev1.PodRunning, true, true, nil, []corev1.ContainerStatus{running("a"), running("b")}, t1)
	if c := get(conds2, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Equal(&t1) {
		t.Errorf("Ready after change = %+v", c)
	}
	if c := get(conds2, corev1.PodReadyToStartContainers); !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("unchanged condition moved: %+v", c)
	}
	conds3 := podConditions(nil, corev1.PodPending, true, false, []corev1.ContainerStatus{waiting("i1", false)}, []corev1.ContainerStatus{waiting("a", false)}, t0)
	if c := get(conds3, corev1.PodInitialized); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotInitialized" || c.Message != "containers with incomplete status: [i1]" {
		t.Errorf("Initialized = %+v", c)
	}
	conds4 := podConditions(nil, corev1.PodSucceeded, true, true, nil, []corev1.ContainerStatus{exited("a", 0)}, t0)
	if c := get(conds4, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "PodCompleted" {
		t.Errorf("Ready of completed pod = %+v", c)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{base: 10 * time.Second, max: 5 * time.Minute}
	var got []time.Duration
	d := time.Duration(0)
	for range 8 {
		got = append(got, d)
		d = b.next(d)
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
}

func TestPullPolicy(t *testing.T) {
	for img, want := range map[string]corev1.PullPolicy{
		"busybox":                   corev1.PullAlways,
		"busybox:latest":            corev1.PullAlways,
		"busybox:1.36":              corev1.PullIfNotPresent,
		"localhost:5000/busybox":    corev1.PullAlways,
		"localhost:5000/busybox:v1": corev1.PullIfNotPresent,
		"busybox@sha256:" + string(make([]byte, 0)) + "abc": corev1.PullIfNotPresent,
	} {
		if got := pullPolicy(&corev1.Container{Image: img}); got != want {
			t.Errorf("%s: %s, want %s", img, got, want)
		}
	}
	if got := pullPolicy(&corev1.Container{Image: "x:latest", ImagePullPolicy: corev1.PullNever}); got != corev1.PullNever {
		t.Errorf("explicit policy ignored: %s", got)
	}
}
