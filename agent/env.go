package agent

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/orch-dev/orch/runtime"
)

// errConfig marks container configuration errors (missing ConfigMap or
// Secret or key, bad field reference): the container waits with
// CreateContainerConfigError.
var errConfig = errors.New("container config error")

// objectSource looks up what env vars and volumes reference. A not-found
// object is an error wrapping apierrors' NotFound.
type objectSource interface {
	ConfigMap(namespace, name string) (*corev1.ConfigMap, error)
	Secret(namespace, name string) (*corev1.Secret, error)
}

// expand expands $(VAR) references in s with the variables of lookup, as
// Kubernetes does: $$ escapes a $, unknown and unterminated references are
// left as they are.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	checkpoint := 0
	for cur := 0; cur < len(s); cur++ {
		if s[cur] != '$' || cur+1 >= len(s) {
			continue
		}
		b.WriteString(s[checkpoint:cur])
		rest := s[cur+1:]
		advance := 1
		switch rest[0] {
		case '$':
			b.WriteByte('$')
		case '(':
			end := strings.IndexByte(rest, ')')
			if end < 0 {
				b.WriteString("$(")
			} else {
				name := rest[1:end]
				if v, ok := lookup(name); ok {
					b.WriteString(v)
				} else {
					b.WriteString("$(" + name + ")")
				}
				advance = end + 1
			}
		default:
			b.WriteByte('$')
			b.WriteByte(rest[0])
		}
		cur += advance
		checkpoint = cur + 1
	}
	b.WriteString(s[min(checkpoint, len(s)):])
	return b.String()
}

// envVarName is the variable prefix of a Service name.
func envVarName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// serviceEnv returns the docker-link style variables of services, exactly
// as the kubelet formats them. Services without a cluster IP are skipped.
func serviceEnv(services []*corev1.Service) []runtime.EnvVar {
	var out []runtime.EnvVar
	for _, svc := range services {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		name := envVarName(svc.Name)
		out = append(out, runtime.EnvVar{Name: name + "_SERVICE_HOST", Value: ip},
			runtime.EnvVar{Name: name + "_SERVICE_PORT", Value: strconv.Itoa(int(svc.Spec.Ports[0].Port))})
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				out = append(out, runtime.EnvVar{Name: name + "_SERVICE_PORT_" + envVarName(p.Name), Value: strconv.Itoa(int(p.Port))})
			}
		}
		for i, p := range svc.Spec.Ports {
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			lower := strings.ToLower(proto)
			url := lower + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
			if i == 0 {
				out = append(out, runtime.EnvVar{Name: name + "_PORT", Value: url})
			}
			pre := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(proto))
			out = append(out,
				runtime.EnvVar{Name: pre, Value: url},
				runtime.EnvVar{Name: pre + "_PROTO", Value: lower},
				runtime.EnvVar{Name: pre + "_PORT", Value: strconv.Itoa(int(p.Port))},
				runtime.EnvVar{Name: pre + "_ADDR", Value: ip})
		}
	}
	return out
}

// podServices selects the services whose variables a pod gets: all of its
// namespace when enableServiceLinks (nil means true), and always the
// `kubernetes` Service of the default namespace. A namespace's own
// service wins over the master one of the same name.
func podServices(pod *corev1.Pod, all []*corev1.Service) []*corev1.Service {
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	byName := map[string]*corev1.Service{}
	for _, s := range all {
		if s.Namespace == corev1.NamespaceDefault && s.Name == "kubernetes" {
			if _, ok := byName[s.Name]; !ok {
				byName[s.Name] = s
			}
		}
	}
	if links {
		for _, s := range all {
			if s.Namespace == pod.Namespace {
				byName[s.Name] = s
			}
		}
	}
	names := slices.Sorted(maps.Keys(byName))
	out := make([]*corev1.Service, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}

// envContext is what valueFrom references resolve against.
type envContext struct {
	pod      *corev1.Pod
	podIPs   []string
	hostIPs  []string
	objects  objectSource
	services []*corev1.Service
	// nodeAllocatable backs resourceFieldRef limits of containers without one.
	nodeAllocatable corev1.ResourceList
}

// containerEnv builds a container's environment as the kubelet does:
// envFrom, then env (with $(VAR) expansion against what is defined so far
// and the service variables), then the service variables not otherwise
// defined. Invalid envFrom keys are skipped and returned.
func containerEnv(ec *envContext, c *corev1.Container) (env []runtime.EnvVar, skipped []string, err error) {
	idx := map[string]int{}
	set := func(k, v string) {
		if i, ok := idx[k]; ok {
			env[i].Value = v
			return
		}
		idx[k] = len(env)
		env = append(env, runtime.EnvVar{Name: k, Value: v})
	}
	svc := serviceEnv(ec.services)
	svcMap := make(map[string]string, len(svc))
	for _, e := range svc {
		svcMap[e.Name] = e.Value
	}
	ns := ec.pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := ec.objects.ConfigMap(ns, from.ConfigMapRef.Name)
			if err != nil {
				if isOptional(from.ConfigMapRef.Optional) && isNotFound(err) {
					continue
				}
				return nil, nil, fmt.Errorf("%w: configmap %q: %w", errConfig, from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := ec.objects.Secret(ns, from.SecretRef.Name)
			if err != nil {
				if isOptional(from.SecretRef.Optional) && isNotFound(err) {
					continue
				}
				return nil, nil, fmt.Errorf("%w: secret %q: %w", errConfig, from.SecretRef.Name, err)
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			name := from.Prefix + k
			if errs := validation.IsEnvVarName(name); len(errs) > 0 {
				skipped = append(skipped, name)
				continue
			}
			set(name, data[k])
		}
	}
	lookup := func(name string) (string, bool) {
		if i, ok := idx[name]; ok {
			return env[i].Value, true
		}
		v, ok := svcMap[name]
		return v, ok
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, lookup))
			continue
		}
		v, ok, err := ec.valueFrom(c, e.ValueFrom)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	for _, e := range svc {
		if _, ok := idx[e.Name]; !ok {
			set(e.Name, e.Value)
		}
	}
	return env, skipped, nil
}

func isOptional(b *bool) bool { return b != nil && *b }

// valueFrom resolves one valueFrom; ok is false for an optional reference
// that is missing (the variable is then not set).
func (ec *envContext) valueFrom(c *corev1.Container, src *corev1.EnvVarSource) (string, bool, error) {
	ns := ec.pod.Namespace
	switch {
	case src.FieldRef != nil:
		v, err := podField(ec.pod, ec.podIPs, ec.hostIPs, src.FieldRef.FieldPath)
		if err != nil {
			return "", false, fmt.Errorf("%w: %w", errConfig, err)
		}
		return v, true, nil
	case src.ResourceFieldRef != nil:
		target := c
		if n := src.ResourceFieldRef.ContainerName; n != "" {
			target = findContainer(ec.pod, n)
			if target == nil {
				return "", false, fmt.Errorf("%w: resourceFieldRef: no container %q", errConfig, n)
			}
		}
		v, err := resourceField(target, src.ResourceFieldRef, ec.nodeAllocatable)
		if err != nil {
			return "", false, fmt.Errorf("%w: %w", errConfig, err)
		}
		return v, true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := ec.objects.ConfigMap(ns, ref.Name)
		if err != nil {
			if isOptional(ref.Optional) && isNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: configmap %q: %w", errConfig, ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if isOptional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("%w: couldn't find key %s in ConfigMap %s/%s", errConfig, ref.Key, ns, ref.Name)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := ec.objects.Secret(ns, ref.Name)
		if err != nil {
			if isOptional(ref.Optional) && isNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: secret %q: %w", errConfig, ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if isOptional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("%w: couldn't find key %s in Secret %s/%s", errConfig, ref.Key, ns, ref.Name)
	}
	return "", false, fmt.Errorf("%w: empty valueFrom", errConfig)
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// formatMap renders labels or annotations as the downward API does:
// sorted key="value" lines with Go-quoted values.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + strconv.Quote(m[k]))
	}
	return b.String()
}

// podField resolves a downward API field path.
func podField(pod *corev1.Pod, podIPs, hostIPs []string, path string) (string, error) {
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok && strings.HasSuffix(k, "']") {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok && strings.HasSuffix(k, "']") {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	first := func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[0]
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return first(podIPs), nil
	case "status.podIPs":
		return strings.Join(podIPs, ","), nil
	case "status.hostIP":
		return first(hostIPs), nil
	case "status.hostIPs":
		return strings.Join(hostIPs, ","), nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// resourceField resolves a resourceFieldRef: the container's request or
// limit (limits default to the node's allocatable), divided by the divisor
// and rounded up.
func resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector, alloc corev1.ResourceList) (string, error) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	var ok bool
	switch ref.Resource {
	case "limits.cpu", "limits.memory", "limits.ephemeral-storage":
		name := corev1.ResourceName(strings.TrimPrefix(ref.Resource, "limits."))
		if q, ok = c.Resources.Limits[name]; !ok {
			q = alloc[name]
		}
	case "requests.cpu", "requests.memory", "requests.ephemeral-storage":
		name := corev1.ResourceName(strings.TrimPrefix(ref.Resource, "requests."))
		if q, ok = c.Resources.Requests[name]; !ok {
			// Requests default to limits, and CPU requests to 0 otherwise.
			q = c.Resources.Limits[name]
		}
	default:
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		m := (q.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue()
		return strconv.FormatInt(m, 10), nil
	}
	d := divisor.Value()
	return strconv.FormatInt((q.Value()+d-1)/d, 10), nil
}
