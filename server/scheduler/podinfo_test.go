package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
)

// TestAssignedInfoMatchesPodRequests: the accounting of a pod, fast path
// for pods requesting nothing included, is what PodRequests computes.
func TestAssignedInfoMatchesPodRequests(t *testing.T) {
	nz := newNonzeroDefaults()
	q := resource.MustParse
	c := func(name string, req, lim corev1.ResourceList) corev1.Container {
		return corev1.Container{Name: name, Image: "i", Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
	}
	always := corev1.ContainerRestartPolicyAlways
	sidecar := c("side", corev1.ResourceList{corev1.ResourceCPU: q("50m")}, nil)
	sidecar.RestartPolicy = &always
	pods := map[string]corev1.PodSpec{
		"one best-effort container": {Containers: []corev1.Container{c("a", nil, nil)}},
		"three best-effort":         {Containers: []corev1.Container{c("a", nil, nil), c("b", nil, nil), c("c", nil, nil)}},
		"requests":                  {Containers: []corev1.Container{c("a", corev1.ResourceList{corev1.ResourceCPU: q("250m"), corev1.ResourceMemory: q("64Mi")}, nil), c("b", nil, nil)}},
		"memory only":               {Containers: []corev1.Container{c("a", corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}, nil)}},
		"limits only":               {Containers: []corev1.Container{c("a", nil, corev1.ResourceList{corev1.ResourceCPU: q("1")})}},
		"init container":            {InitContainers: []corev1.Container{c("init", corev1.ResourceList{corev1.ResourceCPU: q("2")}, nil)}, Containers: []corev1.Container{c("a", nil, nil)}},
		"best-effort init":          {InitContainers: []corev1.Container{c("init", nil, nil)}, Containers: []corev1.Container{c("a", nil, nil)}},
		"sidecar":                   {InitContainers: []corev1.Container{sidecar}, Containers: []corev1.Container{c("a", nil, nil)}},
		"overhead":                  {Overhead: corev1.ResourceList{corev1.ResourceCPU: q("10m")}, Containers: []corev1.Container{c("a", nil, nil)}},
		"pod level":                 {Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("1")}}, Containers: []corev1.Container{c("a", nil, nil)}},
		"extended":                  {Containers: []corev1.Container{c("a", corev1.ResourceList{"example.com/gpu": q("1")}, nil)}},
	}
	for name, spec := range pods {
		p := &corev1.Pod{Spec: spec}
		got := assignedInfo(p, nz)
		want := resourcesOf(resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}))
		want.pods = 1
		wantNZ := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nz})
		if got.req.milliCPU != want.milliCPU || got.req.memory != want.memory || got.req.storage != want.storage || got.req.pods != want.pods || len(got.req.scalar) != len(want.scalar) {
			t.Errorf("%s: requests %+v, want %+v", name, got.req, want)
		}
		for k, v := range want.scalar {
			if got.req.scalar[k] != v {
				t.Errorf("%s: %s %d, want %d", name, k, got.req.scalar[k], v)
			}
		}
		if got.nonzeroCPU != wantNZ.Cpu().MilliValue() || got.nonzeroMem != wantNZ.Memory().Value() {
			t.Errorf("%s: non-zero cpu %d mem %d, want %d %d", name, got.nonzeroCPU, got.nonzeroMem, wantNZ.Cpu().MilliValue(), wantNZ.Memory().Value())
		}
	}
}
