package agent

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/orch-dev/orch/runtime"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "B": "b", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"":                 "",
		"plain":            "plain",
		"$(A)":             "a",
		"x$(A)y$(B)z":      "xaybz",
		"$$(A)":            "$(A)",
		"$$$(A)":           "$a",
		"$(UNKNOWN)":       "$(UNKNOWN)",
		"$(A":              "$(A",
		"$A":               "$A",
		"$":                "$",
		"a$":               "a$",
		"$(EMPTY)x":        "x",
		"$()":              "$()",
		"$(A)$(B)":         "ab",
		"echo $$HOME $(A)": "echo $HOME a",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func svc(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
}

func envMap(env []runtime.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

func TestServiceEnvDeck(t *testing.T) {
	env := envMap(serviceEnv([]*corev1.Service{svc("default", "redis-master", "10.0.0.11", corev1.ServicePort{Port: 6379, Protocol: corev1.ProtocolTCP})}))
	want := map[string]string{
		"REDIS_MASTER_SERVICE_HOST":        "10.0.0.11",
		"REDIS_MASTER_SERVICE_PORT":        "6379",
		"REDIS_MASTER_PORT":                "tcp://10.0.0.11:6379",
		"REDIS_MASTER_PORT_6379_TCP":       "tcp://10.0.0.11:6379",
		"REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
		"REDIS_MASTER_PORT_6379_TCP_PORT":  "6379",
		"REDIS_MASTER_PORT_6379_TCP_ADDR":  "10.0.0.11",
	}
	if fmt.Sprint(env) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", env, want)
	}
}

func TestServiceEnvNamedPortsUDPAndHeadless(t *testing.T) {
	env := envMap(serviceEnv([]*corev1.Service{
		svc("ns", "dns", "10.43.0.10", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}),
		svc("ns", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80}),
		svc("ns", "v6", "fd00::1", corev1.ServicePort{Port: 80}),
	}))
	for k, v := range map[string]string{
		"DNS_SERVICE_PORT":         "53",
		"DNS_SERVICE_PORT_DNS":     "53",
		"DNS_SERVICE_PORT_DNS_TCP": "53",
		"DNS_PORT":                 "udp://10.43.0.10:53",
		"DNS_PORT_53_UDP_PROTO":    "udp",
		"DNS_PORT_53_TCP":          "tcp://10.43.0.10:53",
		"V6_PORT":                  "tcp://[fd00::1]:80",
		"V6_PORT_80_TCP_ADDR":      "fd00::1",
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for k := range env {
		if strings.HasPrefix(k, "HEADLESS") {
			t.Errorf("headless service produced %s", k)
		}
	}
}

func TestPodServicesLinks(t *testing.T) {
	all := []*corev1.Service{
		svc("default", "kubernetes", "10.43.0.1", corev1.ServicePort{Name: "https", Port: 443}),
		svc("app", "redis", "10.43.0.5", corev1.ServicePort{Port: 6379}),
		svc("other", "web", "10.43.0.6", corev1.ServicePort{Port: 80}),
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app"}}
	names := func(s []*corev1.Service) (out []string) {
		for _, x := range s {
			out = append(out, x.Namespace+"/"+x.Name)
		}
		return
	}
	if got := names(podServices(pod, all)); fmt.Sprint(got) != "[default/kubernetes app/redis]" {
		t.Errorf("links on: %v", got)
	}
	f := false
	pod.Spec.EnableServiceLinks = &f
	if got := names(podServices(pod, all)); fmt.Sprint(got) != "[default/kubernetes]" {
		t.Errorf("links off: %v", got)
	}
}

// objs is a map-backed objectSource for tests.
type objs struct {
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (o objs) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if c, ok := o.cms[ns+"/"+name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (o objs) Secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := o.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func testObjs() objs {
	return objs{
		cms:     map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"color": "blue", "size": "L", "bad key": "x"}}},
		secrets: map[string]*corev1.Secret{"ns/sec": {Data: map[string][]byte{"password": []byte("s3cr3t")}}},
	}
}

func TestContainerEnv(t *testing.T) {
	tr := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1", Labels: map[string]string{"app": "web", "tier": "fe"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa"}}
	c := &corev1.Container{
		Name: "c",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Optional: &tr}},
		},
		Env: []corev1.EnvVar{
			{Name: "GREETING", Value: "hello $(CFG_color) $(REDIS_SERVICE_HOST) $(NOPE)"},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nokey", Optional: &tr}}},
			{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "LABELS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOSTIP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "SA", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu"}}},
			{Name: "CFG_size", Value: "override"},
		},
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		},
	}
	ec := &envContext{pod: pod, podIPs: []string{"10.42.0.7"}, hostIPs: []string{"192.168.1.2"}, objects: testObjs(),
		services: []*corev1.Service{svc("ns", "redis", "10.43.0.5", corev1.ServicePort{Port: 6379})}}
	env, skipped, err := containerEnv(ec, c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(skipped) != "[CFG_bad key]" {
		t.Errorf("skipped %v", skipped)
	}
	m := envMap(env)
	for k, v := range map[string]string{
		"CFG_color": "blue", "CFG_size": "override", "GREETING": "hello blue 10.43.0.5 $(NOPE)", "PW": "s3cr3t",
		"NAME": "p", "NS": "ns", "APP": "web", "LABELS": "app=\"web\"\ntier=\"fe\"", "IP": "10.42.0.7", "HOSTIP": "192.168.1.2",
		"NODE": "n1", "SA": "sa", "MEM": "64", "CPU": "1", "REDIS_SERVICE_HOST": "10.43.0.5", "REDIS_PORT_6379_TCP_PORT": "6379",
	} {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if _, ok := m["OPT"]; ok {
		t.Error("optional missing key set OPT")
	}
	// The explicit env comes before the service variables.
	if env[len(env)-1].Name[:5] != "REDIS" {
		t.Errorf("service variables are not last: %v", env)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	ec := &envContext{pod: pod, objects: testObjs()}
	for name, env := range map[string]corev1.EnvVar{
		"missing configmap": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}},
		"missing key":       {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nokey"}}},
		"missing secret":    {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}},
		"bad field":         {Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nope"}}},
	} {
		_, _, err := containerEnv(ec, &corev1.Container{Env: []corev1.EnvVar{env}})
		if err == nil || !strings.Contains(err.Error(), "config error") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	_, _, err := containerEnv(ec, &corev1.Container{EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}}})
	if err == nil {
		t.Error("missing non-optional envFrom secret accepted")
	}
}
