package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServer serves, on loopback, the TLS identity of each request.
func startServer(t *testing.T, p *PKI) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user, groups, ok := ClientIdentity(r.TLS)
			if !ok {
				fmt.Fprint(w, "anonymous")
				return
			}
			fmt.Fprintf(w, "%s %s", user, strings.Join(groups, ","))
		}),
		TLSConfig:         p.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

func get(t *testing.T, url string, cfg *tls.Config) (string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestServerTLSClientCerts(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	url := startServer(t, p)

	nodeCert, nodeKey, err := p.IssueClientCert("system:node:orchtest-n1", []string{"system:nodes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(nodeCert, nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := get(t, url, &tls.Config{RootCAs: p.CAPool(), Certificates: []tls.Certificate{pair}})
	if err != nil || got != "system:node:orchtest-n1 system:nodes" {
		t.Errorf("node cert: %q, %v", got, err)
	}

	adminCert, adminKey := p.AdminCredentials()
	pair, err = tls.X509KeyPair(adminCert, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err = get(t, url, &tls.Config{RootCAs: p.CAPool(), Certificates: []tls.Certificate{pair}})
	if err != nil || got != "system:admin system:masters" {
		t.Errorf("admin cert: %q, %v", got, err)
	}

	// No client certificate: allowed (bearer tokens), anonymous at the TLS layer.
	got, err = get(t, url, &tls.Config{RootCAs: p.CAPool(), ServerName: "kubernetes.default.svc"})
	if err != nil || got != "anonymous" {
		t.Errorf("no client cert: %q, %v", got, err)
	}

	// A client certificate from another CA is rejected.
	other := mustLoad(t, t.TempDir(), testOpts())
	oc, ok, err := other.IssueClientCert("system:admin", []string{"system:masters"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err = tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	// Sent whatever CAs the server names as acceptable: Go's client would
	// otherwise send nothing when the foreign CA's name differs (the CA
	// names carry their creation time), and the request be anonymous.
	foreign := &tls.Config{RootCAs: p.CAPool(), GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &pair, nil
	}}
	if got, err := get(t, url, foreign); err == nil {
		t.Errorf("foreign client cert accepted: %q", got)
	}

	// The client refuses the server when it trusts another CA.
	if _, err := get(t, url, &tls.Config{RootCAs: other.CAPool()}); err == nil {
		t.Error("server cert verified against a foreign CA")
	}
}

func TestIssueClientCert(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	certPEM, keyPEM, err := p.IssueClientCert("system:node:orchtest-n2", []string{"system:nodes"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "system:node:orchtest-n2" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject %v", c.Subject)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify as client: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client cert usable as server cert")
	}
	if d := time.Until(c.NotAfter); d > 24*time.Hour || d < 23*time.Hour {
		t.Errorf("NotAfter in %v, want ~24h", d)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("key does not match cert: %v", err)
	}

	// Never past the CA's expiry.
	long, _, err := p.IssueClientCert("x", nil, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode(long)
	lc, _ := x509.ParseCertificate(block.Bytes)
	if lc.NotAfter.After(p.caCert.NotAfter) {
		t.Errorf("cert outlives CA: %v > %v", lc.NotAfter, p.caCert.NotAfter)
	}

	for _, tc := range []struct {
		cn   string
		orgs []string
		ttl  time.Duration
	}{{"", nil, time.Hour}, {"  ", nil, time.Hour}, {"a", nil, 0}, {"a", nil, -time.Hour}, {"a", []string{""}, time.Hour}} {
		if _, _, err := p.IssueClientCert(tc.cn, tc.orgs, tc.ttl); err == nil {
			t.Errorf("IssueClientCert(%q, %q, %v): want error", tc.cn, tc.orgs, tc.ttl)
		}
	}
}

func BenchmarkIssueClientCert(b *testing.B) {
	p, err := Load(b.TempDir(), testOpts(), testLog())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := p.IssueClientCert("system:node:bench", []string{"system:nodes"}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
