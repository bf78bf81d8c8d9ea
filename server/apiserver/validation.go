package apiserver

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validatorFor returns the kind's validation of the fields orch uses; the
// generic metadata checks run for every kind in the handler.
func validatorFor(kindName string) func(obj, old runtime.Object) field.ErrorList {
	switch kindName {
	case "Pod":
		return func(o, old runtime.Object) field.ErrorList {
			p := o.(*corev1.Pod)
			errs := validatePodSpec(&p.Spec, field.NewPath("spec"))
			if old != nil {
				errs = append(errs, validatePodSpecUpdate(&p.Spec, &old.(*corev1.Pod).Spec)...)
			}
			return errs
		}
	case "Service":
		return func(o, old runtime.Object) field.ErrorList {
			s := o.(*corev1.Service)
			errs := validateService(s)
			if old != nil {
				o := old.(*corev1.Service)
				if o.Spec.ClusterIP != "" && s.Spec.ClusterIP != o.Spec.ClusterIP &&
					s.Spec.Type != corev1.ServiceTypeExternalName && o.Spec.Type != corev1.ServiceTypeExternalName {
					errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIP"), s.Spec.ClusterIP, "field is immutable"))
				}
			}
			return errs
		}
	case "Deployment":
		return func(o, old runtime.Object) field.ErrorList {
			d := o.(*appsv1.Deployment)
			errs := validateWorkload(d.Spec.Replicas, d.Spec.Selector, &d.Spec.Template)
			switch d.Spec.Strategy.Type {
			case appsv1.RollingUpdateDeploymentStrategyType, appsv1.RecreateDeploymentStrategyType:
			default:
				errs = append(errs, field.NotSupported(field.NewPath("spec", "strategy", "type"), d.Spec.Strategy.Type,
					[]string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)}))
			}
			if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType && d.Spec.Strategy.RollingUpdate != nil {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "strategy", "rollingUpdate"),
					"may not be specified when strategy `type` is 'Recreate'"))
			}
			if old != nil {
				errs = append(errs, selectorImmutable(d.Spec.Selector, old.(*appsv1.Deployment).Spec.Selector)...)
			}
			return errs
		}
	case "ReplicaSet":
		return func(o, old runtime.Object) field.ErrorList {
			rs := o.(*appsv1.ReplicaSet)
			errs := validateWorkload(rs.Spec.Replicas, rs.Spec.Selector, &rs.Spec.Template)
			if old != nil {
				errs = append(errs, selectorImmutable(rs.Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector)...)
			}
			return errs
		}
	case "DaemonSet":
		return func(o, old runtime.Object) field.ErrorList {
			ds := o.(*appsv1.DaemonSet)
			errs := validateWorkload(nil, ds.Spec.Selector, &ds.Spec.Template)
			if old != nil {
				errs = append(errs, selectorImmutable(ds.Spec.Selector, old.(*appsv1.DaemonSet).Spec.Selector)...)
			}
			return errs
		}
	case "ConfigMap":
		return func(o, _ runtime.Object) field.ErrorList {
			cm := o.(*corev1.ConfigMap)
			var errs field.ErrorList
			for k := range cm.Data {
				errs = append(errs, validateDataKey(k, field.NewPath("data").Key(k))...)
				if _, dup := cm.BinaryData[k]; dup {
					errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, "duplicate of key present in binaryData"))
				}
			}
			for k := range cm.BinaryData {
				errs = append(errs, validateDataKey(k, field.NewPath("binaryData").Key(k))...)
			}
			return errs
		}
	case "Secret":
		return func(o, _ runtime.Object) field.ErrorList {
			s := o.(*corev1.Secret)
			var errs field.ErrorList
			for k := range s.Data {
				errs = append(errs, validateDataKey(k, field.NewPath("data").Key(k))...)
			}
			return errs
		}
	case "EndpointSlice":
		return func(o, _ runtime.Object) field.ErrorList {
			s := o.(*discoveryv1.EndpointSlice)
			var errs field.ErrorList
			switch s.AddressType {
			case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
			default:
				errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{"IPv4", "IPv6", "FQDN"}))
			}
			return errs
		}
	}
	return nil
}

func validateDataKey(k string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(k) {
		errs = append(errs, field.Invalid(p, k, msg))
	}
	return errs
}

func selectorImmutable(sel, old *metav1.LabelSelector) field.ErrorList {
	if !apiequality.Semantic.DeepEqual(sel, old) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), sel, "field is immutable")}
	}
	return nil
}

func validateWorkload(replicas *int32, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(spec.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	if sel == nil {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else {
		errs = append(errs, metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
		if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(spec.Child("selector"), sel, "empty selector is invalid for deployment"))
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err == nil && !s.Matches(labels.Set(tmpl.Labels)) {
			errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), tmpl.Labels,
				"`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(tmpl.Labels, spec.Child("template", "metadata", "labels"))...)
	errs = append(errs, validatePodSpec(&tmpl.Spec, spec.Child("template", "spec"))...)
	return errs
}

func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	volumes := sets.New[string]()
	for i, v := range s.Volumes {
		vp := p.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes.Has(v.Name) {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes.Insert(v.Name)
	}
	names := sets.New[string]()
	check := func(cs []corev1.Container, cp *field.Path) {
		for i := range cs {
			c := &cs[i]
			ip := cp.Index(i)
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(ip.Child("name"), c.Name, msg))
			}
			if names.Has(c.Name) {
				errs = append(errs, field.Duplicate(ip.Child("name"), c.Name))
			}
			names.Insert(c.Name)
			if c.Image == "" {
				errs = append(errs, field.Required(ip.Child("image"), ""))
			}
			switch c.ImagePullPolicy {
			case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever, "":
			default:
				errs = append(errs, field.NotSupported(ip.Child("imagePullPolicy"), c.ImagePullPolicy, []string{"Always", "IfNotPresent", "Never"}))
			}
			for j, port := range c.Ports {
				pp := ip.Child("ports").Index(j)
				for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
					errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
				}
				if port.HostPort != 0 {
					for _, msg := range validation.IsValidPortNum(int(port.HostPort)) {
						errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, msg))
					}
				}
				if port.Name != "" {
					for _, msg := range validation.IsValidPortName(port.Name) {
						errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
					}
				}
				errs = append(errs, validateProtocol(port.Protocol, pp.Child("protocol"))...)
			}
			for j, m := range c.VolumeMounts {
				mp := ip.Child("volumeMounts").Index(j)
				if !volumes.Has(m.Name) {
					errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
				}
				if m.MountPath == "" {
					errs = append(errs, field.Required(mp.Child("mountPath"), ""))
				}
			}
			for j, e := range c.Env {
				for _, msg := range validation.IsEnvVarName(e.Name) {
					errs = append(errs, field.Invalid(ip.Child("env").Index(j).Child("name"), e.Name, msg))
				}
			}
		}
	}
	check(s.InitContainers, p.Child("initContainers"))
	check(s.Containers, p.Child("containers"))
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever, "":
	default:
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), s.RestartPolicy, []string{"Always", "OnFailure", "Never"}))
	}
	switch s.DNSPolicy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone, "":
	default:
		errs = append(errs, field.NotSupported(p.Child("dnsPolicy"), s.DNSPolicy, []string{"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"}))
	}
	if s.Hostname != "" {
		for _, msg := range validation.IsDNS1123Label(s.Hostname) {
			errs = append(errs, field.Invalid(p.Child("hostname"), s.Hostname, msg))
		}
	}
	if s.Subdomain != "" {
		for _, msg := range validation.IsDNS1123Label(s.Subdomain) {
			errs = append(errs, field.Invalid(p.Child("subdomain"), s.Subdomain, msg))
		}
	}
	return errs
}

func validateProtocol(proto corev1.Protocol, p *field.Path) field.ErrorList {
	switch proto {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "":
		return nil
	}
	return field.ErrorList{field.NotSupported(p, proto, []string{"SCTP", "TCP", "UDP"})}
}

// validatePodSpecUpdate allows only the fields upstream lets change on a
// running pod: container images, activeDeadlineSeconds, added tolerations
// and scheduling gates.
func validatePodSpecUpdate(s, old *corev1.PodSpec) field.ErrorList {
	if apiequality.Semantic.DeepEqual(s, old) {
		// Unchanged (a status write): nothing to forbid, no copies.
		return nil
	}
	a, b := s.DeepCopy(), old.DeepCopy()
	for i := range a.Containers {
		if i < len(b.Containers) {
			a.Containers[i].Image = b.Containers[i].Image
		}
	}
	for i := range a.InitContainers {
		if i < len(b.InitContainers) {
			a.InitContainers[i].Image = b.InitContainers[i].Image
		}
	}
	a.ActiveDeadlineSeconds = b.ActiveDeadlineSeconds
	a.Tolerations = b.Tolerations
	a.SchedulingGates = b.SchedulingGates
	if b.NodeName == "" {
		a.NodeName = ""
	}
	if !apiequality.Semantic.DeepEqual(a, b) {
		return field.ErrorList{field.Forbidden(field.NewPath("spec"),
			"pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")}
	}
	return nil
}

func validateService(s *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		errs = append(errs, field.NotSupported(spec.Child("type"), s.Spec.Type, []string{"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"}))
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(spec.Child("externalName"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(s.Spec.ExternalName) {
				errs = append(errs, field.Invalid(spec.Child("externalName"), s.Spec.ExternalName, msg))
			}
		}
	} else if len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(spec.Child("ports"), ""))
	}
	names := sets.New[string]()
	seen := sets.New[string]()
	for i, port := range s.Spec.Ports {
		pp := spec.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names.Has(port.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names.Insert(port.Name)
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		errs = append(errs, validateProtocol(port.Protocol, pp.Child("protocol"))...)
		key := fmt.Sprintf("%s/%d", port.Protocol, port.Port)
		if seen.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		}
		seen.Insert(key)
		if port.TargetPort.IntVal != 0 || port.TargetPort.StrVal != "" {
			if port.TargetPort.StrVal != "" {
				for _, msg := range validation.IsValidPortName(port.TargetPort.StrVal) {
					errs = append(errs, field.Invalid(pp.Child("targetPort"), port.TargetPort.StrVal, msg))
				}
			} else {
				for _, msg := range validation.IsValidPortNum(int(port.TargetPort.IntVal)) {
					errs = append(errs, field.Invalid(pp.Child("targetPort"), port.TargetPort.IntVal, msg))
				}
			}
		}
		if port.NodePort != 0 && s.Spec.Type == corev1.ServiceTypeClusterIP {
			errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
		}
	}
	switch s.Spec.SessionAffinity {
	case corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP, "":
	default:
		errs = append(errs, field.NotSupported(spec.Child("sessionAffinity"), s.Spec.SessionAffinity, []string{"ClientIP", "None"}))
	}
	errs = append(errs, metavalidation.ValidateLabels(s.Spec.Selector, spec.Child("selector"))...)
	return errs
}
