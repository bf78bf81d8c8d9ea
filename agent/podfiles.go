package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podHostname returns a pod's hostname and, with a subdomain, its FQDN.
func podHostname(pod *corev1.Pod, domain string) (hostname, fqdn string) {
	hostname = pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		hostname = strings.TrimRight(hostname[:63], "-.")
	}
	if pod.Spec.Subdomain != "" {
		fqdn = hostname + "." + pod.Spec.Subdomain + "." + pod.Namespace + ".svc." + domain
	}
	return hostname, fqdn
}

// hostsFile renders a pod's /etc/hosts as the kubelet's managed one; a
// host-network pod gets the host's file (hostContent) instead. Host
// aliases are appended to either.
func hostsFile(pod *corev1.Pod, podIPs []string, domain string, hostContent []byte) []byte {
	var b bytes.Buffer
	if pod.Spec.HostNetwork {
		b.Write(hostContent)
		if len(hostContent) > 0 && !bytes.HasSuffix(hostContent, []byte("\n")) {
			b.WriteByte('\n')
		}
	} else {
		b.WriteString("# Kubernetes-managed hosts file.\n")
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		hostname, fqdn := podHostname(pod, domain)
		for _, ip := range podIPs {
			if fqdn != "" {
				fmt.Fprintf(&b, "%s\t%s\t%s\n", ip, fqdn, hostname)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes()
}

// resolvConf is a parsed resolv.conf.
type resolvConf struct {
	nameservers, searches, options []string
}

func parseResolvConf(b []byte) resolvConf {
	var rc resolvConf
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				rc.nameservers = append(rc.nameservers, f[1])
			}
		case "search", "domain":
			rc.searches = f[1:] // the last one wins, as in glibc
		case "options":
			rc.options = append(rc.options, f[1:]...)
		}
	}
	return rc
}

// mergeOptions merges resolver options: a later option replaces an
// earlier one of the same name (ndots:5 then ndots:2 gives ndots:2).
func mergeOptions(base []string, extra []corev1.PodDNSConfigOption) []string {
	out := slices.Clone(base)
	for _, o := range extra {
		v := o.Name
		if o.Value != nil {
			v += ":" + *o.Value
		}
		i := slices.IndexFunc(out, func(s string) bool { n, _, _ := strings.Cut(s, ":"); return n == o.Name })
		if i >= 0 {
			out[i] = v
		} else {
			out = append(out, v)
		}
	}
	return out
}

// dnsConfig computes a pod's resolv.conf per its dnsPolicy: ClusterFirst
// (the cluster DNS, cluster search domains then the host's, ndots:5;
// host-network pods fall back to Default unless ClusterFirstWithHostNet),
// Default (the host's), None (dnsConfig only). dnsConfig is merged into
// all of them. The result is limited as glibc is: 3 nameservers, 32
// search domains.
func dnsConfig(pod *corev1.Pod, clusterDNS, domain string, host resolvConf) ([]byte, error) {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	var rc resolvConf
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		rc.nameservers = []string{clusterDNS}
		rc.searches = append([]string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}, host.searches...)
		rc.options = []string{"ndots:5"}
	case corev1.DNSDefault:
		rc = resolvConf{nameservers: slices.Clone(host.nameservers), searches: slices.Clone(host.searches), options: slices.Clone(host.options)}
	case corev1.DNSNone:
		if pod.Spec.DNSConfig == nil {
			return nil, fmt.Errorf("%w: dnsPolicy None requires dnsConfig", errConfig)
		}
	default:
		return nil, fmt.Errorf("%w: unknown dnsPolicy %q", errConfig, policy)
	}
	if c := pod.Spec.DNSConfig; c != nil {
		for _, ns := range c.Nameservers {
			if !slices.Contains(rc.nameservers, ns) {
				rc.nameservers = append(rc.nameservers, ns)
			}
		}
		for _, s := range c.Searches {
			if !slices.Contains(rc.searches, s) {
				rc.searches = append(rc.searches, s)
			}
		}
		rc.options = mergeOptions(rc.options, c.Options)
	}
	if len(rc.nameservers) > 3 {
		rc.nameservers = rc.nameservers[:3]
	}
	if len(rc.searches) > 32 {
		rc.searches = rc.searches[:32]
	}
	var b bytes.Buffer
	for _, ns := range rc.nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(rc.searches) > 0 {
		b.WriteString("search " + strings.Join(rc.searches, " ") + "\n")
	}
	if len(rc.options) > 0 {
		b.WriteString("options " + strings.Join(rc.options, " ") + "\n")
	}
	return b.Bytes(), nil
}

// writeIfChanged writes b to path unless it already holds exactly b.
func writeIfChanged(path string, b []byte, mode os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
