package scheduler

import (
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// Non-zero defaults used when scoring pods that request nothing, as
// upstream: otherwise best-effort pods would all pile onto one node.
const (
	defaultMilliCPURequest = 100               // 0.1 core
	defaultMemoryRequest   = 200 * 1024 * 1024 // 200 MiB
)

// resources is the scheduler's flat view of a resource list.
type resources struct {
	milliCPU int64
	memory   int64
	storage  int64 // ephemeral-storage
	pods     int64
	scalar   map[corev1.ResourceName]int64 // extended resources, hugepages
}

func (r *resources) add(o *resources, sign int64) {
	r.milliCPU += sign * o.milliCPU
	r.memory += sign * o.memory
	r.storage += sign * o.storage
	r.pods += sign * o.pods
	for k, v := range o.scalar {
		if r.scalar == nil {
			r.scalar = map[corev1.ResourceName]int64{}
		}
		r.scalar[k] += sign * v
		if r.scalar[k] == 0 {
			delete(r.scalar, k)
		}
	}
}

func resourcesOf(list corev1.ResourceList) resources {
	var r resources
	for name, q := range list {
		switch name {
		case corev1.ResourceCPU:
			r.milliCPU = q.MilliValue()
		case corev1.ResourceMemory:
			r.memory = q.Value()
		case corev1.ResourceEphemeralStorage:
			r.storage = q.Value()
		case corev1.ResourcePods:
			r.pods = q.Value()
		default:
			if v := q.Value(); v != 0 {
				if r.scalar == nil {
					r.scalar = map[corev1.ResourceName]int64{}
				}
				r.scalar[name] = v
			}
		}
	}
	return r
}

// hostPort is one host port a pod binds.
type hostPort struct {
	ip    string // "" or "0.0.0.0" means every address
	proto corev1.Protocol
	port  int32
}

func (a hostPort) conflicts(b hostPort) bool {
	if a.port != b.port || a.proto != b.proto {
		return false
	}
	return a.ip == b.ip || wildcard(a.ip) || wildcard(b.ip)
}

func wildcard(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }

// podInfo is what the scheduler needs of a pod, computed once per pod (not
// once per node it is checked against).
type podInfo struct {
	pod         *corev1.Pod
	uid         types.UID
	key         string
	req         resources // requests, pods=1
	nonzeroCPU  int64     // requests with upstream's scoring defaults
	nonzeroMem  int64
	ports       []hostPort
	owner       types.UID // controller ownerReference, "" when none
	required    nodeaffinity.RequiredNodeAffinity
	hasRequired bool
	preferred   *nodeaffinity.PreferredSchedulingTerms
	tols        []corev1.Toleration
}

func newPodInfo(p *corev1.Pod, key string, nz corev1.ResourceList) (*podInfo, error) {
	pi := assignedInfo(p, nz)
	pi.key, pi.tols = key, p.Spec.Tolerations
	aff := p.Spec.Affinity
	pi.hasRequired = len(p.Spec.NodeSelector) > 0 ||
		(aff != nil && aff.NodeAffinity != nil && aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil)
	if pi.hasRequired {
		pi.required = nodeaffinity.GetRequiredNodeAffinity(p)
	}
	if aff != nil && aff.NodeAffinity != nil && len(aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) > 0 {
		terms, err := nodeaffinity.NewPreferredSchedulingTerms(aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
		if err != nil {
			return nil, fmt.Errorf("preferred node affinity: %w", err)
		}
		pi.preferred = terms
	}
	return pi, nil
}

// assignedInfo is the accounting of a pod bound (or assumed) to a node:
// its requests, host ports and owner.
func assignedInfo(p *corev1.Pod, nzDefaults corev1.ResourceList) *podInfo {
	pi := &podInfo{pod: p, uid: p.UID}
	if requestsNothing(p) {
		// Requests nothing: every container counts the defaults for
		// scoring, as PodRequests would find (without its garbage: two
		// resource lists per container).
		n := int64(len(p.Spec.Containers))
		pi.nonzeroCPU, pi.nonzeroMem = n*nzDefaults.Cpu().MilliValue(), n*nzDefaults.Memory().Value()
	} else {
		pi.req = resourcesOf(resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}))
		nz := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nzDefaults})
		pi.nonzeroCPU, pi.nonzeroMem = nz.Cpu().MilliValue(), nz.Memory().Value()
	}
	pi.req.pods = 1
	pi.ports = podPorts(p)
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		pi.owner = ref.UID
	}
	return pi
}

// requestsNothing reports whether p has no resources, requests or limits
// anywhere PodRequests looks (containers, init containers, overhead, the
// pod level): best-effort pods, the common case.
func requestsNothing(p *corev1.Pod) bool {
	if len(p.Spec.InitContainers) > 0 || len(p.Spec.Overhead) > 0 || p.Spec.Resources != nil {
		return false
	}
	for i := range p.Spec.Containers {
		r := &p.Spec.Containers[i].Resources
		if len(r.Requests) > 0 || len(r.Limits) > 0 || len(r.Claims) > 0 {
			return false
		}
	}
	return true
}

// newNonzeroDefaults is the list filling missing cpu and memory requests
// for scoring (made once per scheduler, then only read).
func newNonzeroDefaults() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(defaultMilliCPURequest, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(defaultMemoryRequest, resource.BinarySI),
	}
}

func podPorts(p *corev1.Pod) []hostPort {
	var out []hostPort
	add := func(cs []corev1.Container) {
		for i := range cs {
			for _, port := range cs[i].Ports {
				if port.HostPort <= 0 {
					continue
				}
				proto := port.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				out = append(out, hostPort{ip: port.HostIP, proto: proto, port: port.HostPort})
			}
		}
	}
	add(p.Spec.Containers)
	add(p.Spec.InitContainers)
	return out
}

// tolerates reports whether the pod tolerates taint.
func tolerates(log logr.Logger, tols []corev1.Toleration, taint *corev1.Taint) bool {
	for i := range tols {
		if tols[i].ToleratesTaint(log, taint, true) {
			return true
		}
	}
	return false
}
