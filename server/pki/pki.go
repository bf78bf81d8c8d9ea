package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names under <data-dir>/server/tls, as k3s names them.
const (
	CACertFile      = "server-ca.crt"
	CAKeyFile       = "server-ca.key"
	ServingCertFile = "serving-kube-apiserver.crt"
	ServingKeyFile  = "serving-kube-apiserver.key"
	AdminCertFile   = "client-admin.crt"
	AdminKeyFile    = "client-admin.key"
)

const (
	certMode = 0o644
	keyMode  = 0o600
)

// Options are the inputs of Load that are not kept on disk.
type Options struct {
	// NodeName is this server's node name; it is a SAN of the serving
	// certificate.
	NodeName string
	// Hostname is a SAN of the serving certificate; empty means
	// os.Hostname().
	Hostname string
	// NodeIPs and AdvertiseIP are IP SANs of the serving certificate.
	NodeIPs     []net.IP
	AdvertiseIP net.IP
	// ServiceIP is the first IP of the service CIDR (the "kubernetes"
	// Service, e.g. 10.43.0.1). Required.
	ServiceIP net.IP
	// ClusterDomain is the cluster DNS domain; empty means "cluster.local".
	ClusterDomain string
	// ExtraSANs are additional SANs (k3s's --tls-san): IP addresses or DNS
	// names.
	ExtraSANs []string
	// Token is the --token value: a full K10 token, whose CA hash must
	// match this cluster's CA, or a bare secret. Empty keeps the stored
	// token or, on first start, generates a random secret.
	Token string
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// PKI holds the cluster CA and the server's credentials. It is immutable
// after Load and safe for concurrent use.
type PKI struct {
	dir       string
	caCert    *x509.Certificate
	caKey     crypto.Signer
	caPEM     []byte
	caPool    *x509.CertPool
	serving   tls.Certificate
	adminCert []byte
	adminKey  []byte
	token     Token
	now       func() time.Time
}

// Load reads the cluster PKI from <dataDir>/server/tls and the join token
// from <dataDir>/server/token, generating what is missing on first start: a
// CA (ECDSA P-256, 10 years), the API server's serving certificate, the
// admin client certificate (CN=system:admin, O=system:masters) and the
// token. Later calls reuse them; the serving certificate is regenerated when
// its SAN set differs from the one opts asks for, when it expires within 90
// days or when it is not signed by the CA, and the admin certificate when it
// expires within 90 days or is not signed by the CA. The CA is never
// replaced: a CA certificate or key that exists but cannot be used is an
// error naming the file, as is any other unreadable file.
func Load(dataDir string, opts Options, log *slog.Logger) (*PKI, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ServiceIP == nil {
		return nil, errors.New("pki: Options.ServiceIP (the first service IP) is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("pki: hostname: %w", err)
		}
		opts.Hostname = h
	}
	dnsNames, ips, err := servingSANs(opts)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var given *Token
	if opts.Token != "" {
		t, err := ParseToken(opts.Token)
		if err != nil {
			return nil, fmt.Errorf("pki: --token: %w", err)
		}
		given = &t
	}

	p := &PKI{dir: filepath.Join(dataDir, "server", "tls"), now: opts.Now}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", p.dir, err)
	}
	if err := p.loadCA(log); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(p.caCert)

	if err := p.loadServing(dnsNames, ips, log); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := p.loadAdmin(log); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := p.loadToken(filepath.Join(dataDir, "server", "token"), given, log); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return p, nil
}

func (p *PKI) path(name string) string { return filepath.Join(p.dir, name) }

func (p *PKI) loadCA(log *slog.Logger) error {
	certPath, keyPath := p.path(CACertFile), p.path(CAKeyFile)
	certPEM, haveCert, err := readOptional(certPath)
	if err != nil {
		return err
	}
	keyPEM, haveKey, err := readOptional(keyPath)
	if err != nil {
		return err
	}
	switch {
	case !haveCert && !haveKey:
		cert, certPEM, key, keyPEM, err := newCA(p.now())
		if err != nil {
			return err
		}
		// Key first: a crash in between leaves a key without a
		// certificate, which the next start reports instead of
		// silently replacing.
		if err := writeFileAtomic(keyPath, keyPEM, keyMode); err != nil {
			return err
		}
		if err := writeFileAtomic(certPath, certPEM, certMode); err != nil {
			return err
		}
		p.caCert, p.caPEM, p.caKey = cert, certPEM, key
		log.Info("generated cluster CA", "cert", certPath, "notAfter", cert.NotAfter)
		return nil
	case !haveCert:
		return fmt.Errorf("CA key %s exists but CA certificate %s is missing; restore it (or remove the key to create a new cluster CA)", keyPath, certPath)
	case !haveKey:
		return fmt.Errorf("CA certificate %s exists but CA key %s is missing; restore it", certPath, keyPath)
	}
	cert, err := parseCertPEM(certPath, certPEM)
	if err != nil {
		return err
	}
	if !cert.IsCA {
		return fmt.Errorf("%s: certificate %q is not a CA", certPath, cert.Subject.CommonName)
	}
	key, err := parseKeyPEM(keyPath, keyPEM)
	if err != nil {
		return err
	}
	if !publicKeyMatches(cert, key) {
		return fmt.Errorf("%s does not hold the private key of the CA certificate %s", keyPath, certPath)
	}
	if now := p.now(); now.After(cert.NotAfter) {
		return fmt.Errorf("%s: cluster CA expired on %s", certPath, cert.NotAfter.Format(time.RFC3339))
	}
	p.caCert, p.caPEM, p.caKey = cert, certPEM, key
	return nil
}

// loadLeaf reads an existing leaf certificate and key; it returns ok=false
// (and no error) when either file is missing or the certificate must be
// renewed per renew.
func (p *PKI) loadLeaf(certName, keyName string, renew func(*x509.Certificate) string, log *slog.Logger) (certPEM, keyPEM []byte, ok bool, err error) {
	certPath, keyPath := p.path(certName), p.path(keyName)
	certPEM, haveCert, err := readOptional(certPath)
	if err != nil {
		return nil, nil, false, err
	}
	keyPEM, haveKey, err := readOptional(keyPath)
	if err != nil {
		return nil, nil, false, err
	}
	if !haveCert || !haveKey {
		return nil, nil, false, nil
	}
	cert, err := parseCertPEM(certPath, certPEM)
	if err != nil {
		return nil, nil, false, err
	}
	key, err := parseKeyPEM(keyPath, keyPEM)
	if err != nil {
		return nil, nil, false, err
	}
	if !publicKeyMatches(cert, key) {
		return nil, nil, false, fmt.Errorf("%s does not hold the private key of the certificate %s", keyPath, certPath)
	}
	reason := ""
	if err := cert.CheckSignatureFrom(p.caCert); err != nil {
		reason = "not signed by the cluster CA"
	} else if p.now().Add(renewBefore).After(cert.NotAfter) {
		reason = "expires within 90 days"
	} else {
		reason = renew(cert)
	}
	if reason != "" {
		log.Info("regenerating certificate", "cert", certPath, "reason", reason)
		return nil, nil, false, nil
	}
	return certPEM, keyPEM, true, nil
}

func (p *PKI) writeLeaf(certName, keyName string, certPEM, keyPEM []byte) error {
	if err := writeFileAtomic(p.path(keyName), keyPEM, keyMode); err != nil {
		return err
	}
	return writeFileAtomic(p.path(certName), certPEM, certMode)
}

func (p *PKI) loadServing(dnsNames []string, ips []net.IP, log *slog.Logger) error {
	want := sanKey(dnsNames, ips)
	certPEM, keyPEM, ok, err := p.loadLeaf(ServingCertFile, ServingKeyFile, func(c *x509.Certificate) string {
		if sanKey(c.DNSNames, c.IPAddresses) != want {
			return "SANs changed"
		}
		return ""
	}, log)
	if err != nil {
		return err
	}
	if !ok {
		now := p.now()
		certPEM, keyPEM, err = signLeaf(p.caCert, p.caKey, leafSpec{
			commonName: "kube-apiserver",
			dnsNames:   dnsNames,
			ips:        ips,
			usage:      x509.ExtKeyUsageServerAuth,
			notAfter:   now.Add(leafValidity),
		}, now)
		if err != nil {
			return err
		}
		if err := p.writeLeaf(ServingCertFile, ServingKeyFile, certPEM, keyPEM); err != nil {
			return err
		}
		log.Info("generated API server serving certificate", "dnsNames", dnsNames, "ips", ips)
	}
	p.serving, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", p.path(ServingCertFile), err)
	}
	return nil
}

func (p *PKI) loadAdmin(log *slog.Logger) error {
	certPEM, keyPEM, ok, err := p.loadLeaf(AdminCertFile, AdminKeyFile, func(c *x509.Certificate) string {
		if c.Subject.CommonName != adminCommonNam || !slices.Equal(c.Subject.Organization, []string{adminGroup}) {
			return "unexpected subject"
		}
		return ""
	}, log)
	if err != nil {
		return err
	}
	if !ok {
		now := p.now()
		certPEM, keyPEM, err = signLeaf(p.caCert, p.caKey, leafSpec{
			commonName: adminCommonNam,
			orgs:       []string{adminGroup},
			usage:      x509.ExtKeyUsageClientAuth,
			notAfter:   now.Add(leafValidity),
		}, now)
		if err != nil {
			return err
		}
		if err := p.writeLeaf(AdminCertFile, AdminKeyFile, certPEM, keyPEM); err != nil {
			return err
		}
		log.Info("generated admin client certificate", "cert", p.path(AdminCertFile))
	}
	p.adminCert, p.adminKey = certPEM, keyPEM
	return nil
}

// loadToken settles the join token: the --token secret when given (a full
// token's CA hash must match this CA), else the stored one, else a new
// random secret; the full token is (re)written when it changed.
func (p *PKI) loadToken(path string, given *Token, log *slog.Logger) error {
	hash := CAHash(p.caPEM)
	b, have, err := readOptional(path)
	if err != nil {
		return err
	}
	var stored *Token
	if have {
		t, err := ParseToken(string(b))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if t.CAHash != "" && t.CAHash != hash {
			return fmt.Errorf("%s: %w: the token file pins %s but %s hashes to %s (was the CA replaced?)",
				path, ErrCAMismatch, t.CAHash, p.path(CACertFile), hash)
		}
		stored = &t
	}
	var tok Token
	switch {
	case given != nil:
		if given.CAHash != "" && given.CAHash != hash {
			return fmt.Errorf("--token: %w: the token pins %s but this server's CA %s hashes to %s",
				ErrCAMismatch, given.CAHash, p.path(CACertFile), hash)
		}
		tok = Token{CAHash: hash, Username: given.Username, Secret: given.Secret}
		if stored != nil && !SecretEqual(stored.Secret, given.Secret) {
			log.Warn("--token differs from the stored join token; agents must use the new one", "file", path)
		}
	case stored != nil:
		tok = Token{CAHash: hash, Username: stored.Username, Secret: stored.Secret}
	default:
		secret := make([]byte, 16)
		if _, err := rand.Read(secret); err != nil {
			return fmt.Errorf("generate join token: %w", err)
		}
		tok = Token{CAHash: hash, Username: ServerUsername, Secret: hex.EncodeToString(secret)}
		log.Info("generated join token", "file", path)
	}
	if !have || strings.TrimSpace(string(b)) != tok.String() {
		if err := writeFileAtomic(path, []byte(tok.String()+"\n"), keyMode); err != nil {
			return err
		}
	}
	p.token = tok
	return nil
}

// servingSANs returns the serving certificate's SANs, deduplicated and
// sorted: DNS names lowercased, IPs in canonical form.
func servingSANs(o Options) ([]string, []net.IP, error) {
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + o.ClusterDomain}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, o.ServiceIP}
	ips = append(ips, o.NodeIPs...)
	if o.AdvertiseIP != nil {
		ips = append(ips, o.AdvertiseIP)
	}
	names := []string{o.Hostname, o.NodeName}
	names = append(names, o.ExtraSANs...)
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(n); err != nil {
			return nil, nil, err
		}
		dns = append(dns, strings.ToLower(n))
	}
	slices.Sort(dns)
	dns = slices.Compact(dns)
	seen := map[string]bool{}
	var out []net.IP
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !seen[ip.String()] {
			seen[ip.String()] = true
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, func(a, b net.IP) int { return strings.Compare(a.String(), b.String()) })
	return dns, out, nil
}

// checkDNSName accepts host names and wildcard names ("*.example.com").
func checkDNSName(n string) error {
	name := strings.TrimPrefix(n, "*.")
	if len(name) > 253 {
		return fmt.Errorf("SAN %q: longer than 253 characters", n)
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("SAN %q: not an IP address or a valid DNS name (label %q)", n, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("SAN %q: not an IP address or a valid DNS name (character %q)", n, r)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("SAN %q: DNS label %q starts or ends with '-'", n, label)
		}
	}
	return nil
}

// sanKey is a canonical string of a SAN set, for comparison.
func sanKey(dnsNames []string, ips []net.IP) string {
	d := make([]string, 0, len(dnsNames))
	for _, n := range dnsNames {
		d = append(d, strings.ToLower(n))
	}
	slices.Sort(d)
	d = slices.Compact(d)
	s := make([]string, 0, len(ips))
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	slices.Sort(s)
	s = slices.Compact(s)
	return strings.Join(d, ",") + "|" + strings.Join(s, ",")
}
