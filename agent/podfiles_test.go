package agent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHostsFile(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "app"},
		Spec: corev1.PodSpec{Hostname: "web-0", Subdomain: "web",
			HostAliases: []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"foo.local", "bar.local"}}}}}
	got := string(hostsFile(pod, []string{"10.42.0.5"}, "cluster.local", nil))
	for _, want := range []string{"# Kubernetes-managed hosts file.\n", "127.0.0.1\tlocalhost\n",
		"10.42.0.5\tweb-0.web.app.svc.cluster.local\tweb-0\n", "# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
	pod.Spec.HostNetwork = true
	got = string(hostsFile(pod, nil, "cluster.local", []byte("127.0.0.1 myhost")))
	if !strings.HasPrefix(got, "127.0.0.1 myhost\n") || strings.Contains(got, "Kubernetes-managed") || !strings.Contains(got, "foo.local") {
		t.Errorf("host-network hosts file:\n%s", got)
	}
}

func TestDNSConfig(t *testing.T) {
	host := parseResolvConf([]byte("# comment\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch corp.example lab.example\noptions edns0\n"))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app"}}
	got, err := dnsConfig(pod, "10.43.0.10", "cluster.local", host)
	if err != nil {
		t.Fatal(err)
	}
	want := "nameserver 10.43.0.10\nsearch app.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5\n"
	if string(got) != want {
		t.Errorf("ClusterFirst:\n%s\nwant\n%s", got, want)
	}
	pod.Spec.HostNetwork = true
	got, _ = dnsConfig(pod, "10.43.0.10", "cluster.local", host)
	if string(got) != "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch corp.example lab.example\noptions edns0\n" {
		t.Errorf("ClusterFirst + hostNetwork = Default:\n%s", got)
	}
	pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	got, _ = dnsConfig(pod, "10.43.0.10", "cluster.local", host)
	if !strings.HasPrefix(string(got), "nameserver 10.43.0.10\n") {
		t.Errorf("ClusterFirstWithHostNet:\n%s", got)
	}
	two := "2"
	pod.Spec.DNSPolicy = corev1.DNSNone
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"x.y"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "rotate"}}}
	got, _ = dnsConfig(pod, "10.43.0.10", "cluster.local", host)
	if string(got) != "nameserver 1.1.1.1\nsearch x.y\noptions ndots:2 rotate\n" {
		t.Errorf("None:\n%s", got)
	}
	pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	pod.Spec.HostNetwork = false
	got, _ = dnsConfig(pod, "10.43.0.10", "cluster.local", host)
	if !strings.Contains(string(got), "options ndots:2 rotate") || !strings.Contains(string(got), "nameserver 10.43.0.10\nnameserver 1.1.1.1\n") {
		t.Errorf("ClusterFirst + dnsConfig:\n%s", got)
	}
	pod.Spec.DNSPolicy = corev1.DNSNone
	pod.Spec.DNSConfig = nil
	if _, err := dnsConfig(pod, "10.43.0.10", "cluster.local", host); err == nil {
		t.Error("None without dnsConfig accepted")
	}
}
