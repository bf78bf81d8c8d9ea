package dns

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	mdns "github.com/miekg/dns"
)

// corefileParams are the inputs of the generated Corefile.
type corefileParams struct {
	Domain     string
	Addrs      []netip.Addr
	Port       int
	ClusterID  string // hook id of the Index
	LoopID     string // hook id of the loop Guard
	Upstreams  []string
	HealthAddr string
	CacheTTL   int
	// Custom is the coredns-custom ConfigMap's data: *.override lines go into
	// the main block, *.server are extra server blocks.
	Custom map[string]string
}

// corefile renders the Corefile for p. Custom keys are applied in name order;
// an invalid server block is an error naming its key.
func corefile(p corefileParams) (string, error) {
	var b strings.Builder
	bind := make([]string, len(p.Addrs))
	for i, a := range p.Addrs {
		bind[i] = a.String()
	}
	zone := mdns.Fqdn(p.Domain)
	fmt.Fprintf(&b, ".:%d {\n", p.Port)
	if len(bind) > 0 {
		fmt.Fprintf(&b, "    bind %s\n", strings.Join(bind, " "))
	}
	b.WriteString("    errors\n")
	if p.HealthAddr != "" {
		fmt.Fprintf(&b, "    health %s\n", p.HealthAddr)
	}
	fmt.Fprintf(&b, "    orch %s %s in-addr.arpa ip6.arpa", p.ClusterID, zone)
	if len(bind) > 0 {
		fmt.Fprintf(&b, " {\n        ns %s\n    }", strings.Join(bind, " "))
	}
	b.WriteString("\n")
	if len(p.Upstreams) > 0 {
		fmt.Fprintf(&b, "    orch_loop %s\n", p.LoopID)
		fmt.Fprintf(&b, "    forward . %s\n", strings.Join(p.Upstreams, " "))
	}
	// The cache sits after orch (see directives): it holds upstream answers only.
	fmt.Fprintf(&b, "    cache %d\n", p.CacheTTL)
	keys := make([]string, 0, len(p.Custom))
	for k := range p.Custom {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasSuffix(k, ".override") {
			fmt.Fprintf(&b, "    # %s\n", k)
			for _, l := range strings.Split(p.Custom[k], "\n") {
				if strings.TrimSpace(l) != "" {
					b.WriteString("    " + l + "\n")
				}
			}
		}
	}
	b.WriteString("}\n")
	for _, k := range keys {
		if !strings.HasSuffix(k, ".server") {
			continue
		}
		block, err := customServer(k, p.Custom[k], bind)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "# %s\n%s\n", k, block)
	}
	return b.String(), nil
}

// customServer checks one *.server entry and, when a block has no bind, binds
// it to the cluster DNS addresses so it never listens on all the node's
// addresses.
func customServer(key, text string, bind []string) (string, error) {
	blocks, err := caddyfile.Parse(key, bytes.NewReader([]byte(text)), nil)
	if err != nil {
		return "", fmt.Errorf("coredns-custom %s: %w", key, err)
	}
	if len(blocks) == 0 {
		return "", nil
	}
	if len(bind) == 0 || slices.ContainsFunc(blocks, func(sb caddyfile.ServerBlock) bool { return len(sb.Tokens["bind"]) > 0 }) {
		return text, nil
	}
	if len(blocks) != 1 || strings.Count(text, "{") == 0 {
		return "", fmt.Errorf("coredns-custom %s: several server blocks or one without braces need their own bind directive", key)
	}
	i := strings.Index(text, "{")
	return text[:i+1] + "\n    bind " + strings.Join(bind, " ") + text[i+1:], nil
}

// upstreams reads the nameservers of a resolv.conf, dropping the cluster DNS
// addresses themselves (a certain loop).
func upstreams(path string, self []netip.Addr) ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf %s: %w", path, err)
	}
	var out []string
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if slices.Contains(self, a.Unmap()) {
			continue
		}
		port := cc.Port
		if port == "" {
			port = "53"
		}
		out = append(out, netip.AddrPortFrom(a, uint16(atoiOr(port, 53))).String())
	}
	return out, nil
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}
