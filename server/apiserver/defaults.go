package apiserver

import (
	"math"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	appsv1beta1 "k8s.io/api/apps/v1beta1"
	appsv1beta2 "k8s.io/api/apps/v1beta2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	extensionsv1beta1 "k8s.io/api/extensions/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// defaultsFor returns upstream's defaulting for the fields of a kind that
// orch's users and components rely on.
func defaultsFor(kindName string) func(runtime.Object) {
	switch kindName {
	case "Pod":
		return func(o runtime.Object) {
			p := o.(*corev1.Pod)
			defaultPodSpec(&p.Spec)
			if p.Status.Phase == "" {
				p.Status.Phase = corev1.PodPending
			}
		}
	case "Service":
		return func(o runtime.Object) { defaultService(o.(*corev1.Service)) }
	case "Deployment":
		return func(o runtime.Object) { defaultDeployment(o.(*appsv1.Deployment)) }
	case "ReplicaSet":
		return func(o runtime.Object) {
			rs := o.(*appsv1.ReplicaSet)
			if rs.Spec.Replicas == nil {
				rs.Spec.Replicas = ptr(int32(1))
			}
			defaultPodSpec(&rs.Spec.Template.Spec)
		}
	case "DaemonSet":
		return func(o runtime.Object) {
			ds := o.(*appsv1.DaemonSet)
			if ds.Spec.UpdateStrategy.Type == "" {
				ds.Spec.UpdateStrategy.Type = appsv1.RollingUpdateDaemonSetStrategyType
			}
			if ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
				if ds.Spec.UpdateStrategy.RollingUpdate == nil {
					ds.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
				}
				ru := ds.Spec.UpdateStrategy.RollingUpdate
				if ru.MaxUnavailable == nil {
					ru.MaxUnavailable = ptr(intstr.FromInt32(1))
				}
				if ru.MaxSurge == nil {
					ru.MaxSurge = ptr(intstr.FromInt32(0))
				}
			}
			if ds.Spec.RevisionHistoryLimit == nil {
				ds.Spec.RevisionHistoryLimit = ptr(int32(10))
			}
			defaultPodSpec(&ds.Spec.Template.Spec)
		}
	case "Namespace":
		return func(o runtime.Object) {
			n := o.(*corev1.Namespace)
			if n.Status.Phase == "" {
				n.Status.Phase = corev1.NamespaceActive
			}
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[corev1.LabelMetadataName] = n.Name
			if len(n.Spec.Finalizers) == 0 && n.DeletionTimestamp == nil {
				n.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
			}
		}
	case "Secret":
		return func(o runtime.Object) {
			s := o.(*corev1.Secret)
			if s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			// stringData is write-only: merged into data, never stored.
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		}
	case "Node":
		return func(o runtime.Object) {
			n := o.(*corev1.Node)
			if n.Status.Allocatable == nil && n.Status.Capacity != nil {
				n.Status.Allocatable = n.Status.Capacity.DeepCopy()
			}
		}
	case "Event":
		return func(o runtime.Object) {
			e := o.(*corev1.Event)
			if e.Type == "" {
				e.Type = corev1.EventTypeNormal
			}
			if e.Count == 0 && e.Series == nil {
				e.Count = 1
			}
		}
	case "EndpointSlice":
		return func(o runtime.Object) {
			s := o.(*discoveryv1.EndpointSlice)
			for i := range s.Ports {
				if s.Ports[i].Protocol == nil {
					s.Ports[i].Protocol = ptr(corev1.ProtocolTCP)
				}
			}
		}
	case "Endpoints":
		return func(o runtime.Object) {
			e := o.(*corev1.Endpoints)
			for i := range e.Subsets {
				for j := range e.Subsets[i].Ports {
					if e.Subsets[i].Ports[j].Protocol == "" {
						e.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
					}
				}
			}
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.EnableServiceLinks == nil {
		s.EnableServiceLinks = ptr(true)
	}
	if s.ServiceAccountName == "" && s.DeprecatedServiceAccount != "" {
		s.ServiceAccountName = s.DeprecatedServiceAccount
	}
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = "default"
	}
	s.DeprecatedServiceAccount = s.ServiceAccountName
	if s.Priority == nil {
		s.Priority = ptr(int32(0))
	}
	if s.PreemptionPolicy == nil {
		s.PreemptionPolicy = ptr(corev1.PreemptLowerPriority)
	}
	for i := range s.InitContainers {
		defaultContainer(&s.InitContainers[i])
	}
	for i := range s.Containers {
		defaultContainer(&s.Containers[i])
	}
	for i := range s.Volumes {
		v := &s.Volumes[i].VolumeSource
		switch {
		case v.ConfigMap != nil && v.ConfigMap.DefaultMode == nil:
			v.ConfigMap.DefaultMode = ptr(corev1.ConfigMapVolumeSourceDefaultMode)
		case v.Secret != nil && v.Secret.DefaultMode == nil:
			v.Secret.DefaultMode = ptr(corev1.SecretVolumeSourceDefaultMode)
		case v.DownwardAPI != nil && v.DownwardAPI.DefaultMode == nil:
			v.DownwardAPI.DefaultMode = ptr(corev1.DownwardAPIVolumeSourceDefaultMode)
		case v.Projected != nil && v.Projected.DefaultMode == nil:
			v.Projected.DefaultMode = ptr(corev1.ProjectedVolumeSourceDefaultMode)
		case v.HostPath != nil && v.HostPath.Type == nil:
			v.HostPath.Type = ptr(corev1.HostPathUnset)
		case v.EmptyDir == nil && v.ConfigMap == nil && v.Secret == nil && v.HostPath == nil &&
			v.DownwardAPI == nil && v.Projected == nil && v.PersistentVolumeClaim == nil:
			// A volume with no source is an emptyDir, as upstream.
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
		if v.DownwardAPI != nil {
			for j := range v.DownwardAPI.Items {
				if f := v.DownwardAPI.Items[j].FieldRef; f != nil && f.APIVersion == "" {
					f.APIVersion = "v1"
				}
			}
		}
	}
}

func defaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = defaultPullPolicy(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		if p.HTTPGet != nil {
			if p.HTTPGet.Path == "" {
				p.HTTPGet.Path = "/"
			}
			if p.HTTPGet.Scheme == "" {
				p.HTTPGet.Scheme = corev1.URISchemeHTTP
			}
		}
	}
}

// defaultPullPolicy is Always for :latest or untagged images, else
// IfNotPresent, as upstream.
func defaultPullPolicy(image string) corev1.PullPolicy {
	if strings.Contains(image, "@") {
		return corev1.PullIfNotPresent
	}
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	tag := ""
	if i := strings.LastIndex(name, ":"); i >= 0 {
		tag = name[i+1:]
	}
	if tag == "" || tag == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

func defaultService(s *corev1.Service) {
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if s.Spec.SessionAffinity == "" {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		if s.Spec.SessionAffinityConfig == nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}
		if s.Spec.SessionAffinityConfig.ClientIP == nil {
			s.Spec.SessionAffinityConfig.ClientIP = &corev1.ClientIPConfig{}
		}
		if s.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			s.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = ptr(corev1.DefaultClientIPServiceAffinitySeconds)
		}
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == (intstr.IntOrString{}) {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	if s.Spec.InternalTrafficPolicy == nil {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	}
	if (s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer) &&
		s.Spec.ExternalTrafficPolicy == "" {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.AllocateLoadBalancerNodePorts == nil {
		s.Spec.AllocateLoadBalancerNodePorts = ptr(true)
	}
	if s.Spec.IPFamilyPolicy == nil {
		s.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
	}
	if len(s.Spec.IPFamilies) == 0 {
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	}
}

func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr(int32(1))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if d.Spec.Strategy.RollingUpdate == nil {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		ru := d.Spec.Strategy.RollingUpdate
		if ru.MaxUnavailable == nil {
			ru.MaxUnavailable = ptr(intstr.FromString("25%"))
		}
		if ru.MaxSurge == nil {
			ru.MaxSurge = ptr(intstr.FromString("25%"))
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultPodSpec(&d.Spec.Template.Spec)
}

// legacyDeploymentDefaults applies the defaults of the old Deployment
// versions before conversion to apps/v1: the selector comes from the
// template's labels, and extensions/v1beta1 keeps every old ReplicaSet and
// has no progress deadline, as it did upstream.
func legacyDeploymentDefaults(gv schema.GroupVersion) func(runtime.Object) {
	return func(o runtime.Object) {
		switch d := o.(type) {
		case *extensionsv1beta1.Deployment:
			if d.Spec.Selector == nil && len(d.Spec.Template.Labels) > 0 {
				d.Spec.Selector = &metav1.LabelSelector{MatchLabels: copyMap(d.Spec.Template.Labels)}
			}
			if len(d.Labels) == 0 {
				d.Labels = copyMap(d.Spec.Template.Labels)
			}
			if d.Spec.Replicas == nil {
				d.Spec.Replicas = ptr(int32(1))
			}
			if d.Spec.Strategy.Type == "" {
				d.Spec.Strategy.Type = extensionsv1beta1.RollingUpdateDeploymentStrategyType
			}
			if d.Spec.Strategy.Type == extensionsv1beta1.RollingUpdateDeploymentStrategyType {
				if d.Spec.Strategy.RollingUpdate == nil {
					d.Spec.Strategy.RollingUpdate = &extensionsv1beta1.RollingUpdateDeployment{}
				}
				if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
					d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(1))
				}
				if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
					d.Spec.Strategy.RollingUpdate.MaxSurge = ptr(intstr.FromInt32(1))
				}
			}
			if d.Spec.RevisionHistoryLimit == nil {
				d.Spec.RevisionHistoryLimit = ptr(int32(math.MaxInt32))
			}
			if d.Spec.ProgressDeadlineSeconds == nil {
				d.Spec.ProgressDeadlineSeconds = ptr(int32(math.MaxInt32))
			}
		case *appsv1beta1.Deployment:
			if d.Spec.Selector == nil && len(d.Spec.Template.Labels) > 0 {
				d.Spec.Selector = &metav1.LabelSelector{MatchLabels: copyMap(d.Spec.Template.Labels)}
			}
			if len(d.Labels) == 0 {
				d.Labels = copyMap(d.Spec.Template.Labels)
			}
			if d.Spec.RevisionHistoryLimit == nil {
				d.Spec.RevisionHistoryLimit = ptr(int32(2))
			}
		case *appsv1beta2.Deployment:
			if len(d.Labels) == 0 {
				d.Labels = copyMap(d.Spec.Template.Labels)
			}
		}
	}
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
