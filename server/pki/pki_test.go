package pki

import (
	"bytes"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOpts() Options {
	return Options{
		NodeName:    "orchtest-node1",
		Hostname:    "orchtest-host",
		NodeIPs:     []net.IP{net.ParseIP("192.0.2.10"), net.ParseIP("2001:db8::10")},
		AdvertiseIP: net.ParseIP("198.51.100.7"),
		ServiceIP:   net.ParseIP("10.43.0.1"),
		ExtraSANs:   []string{"api.example.test", "203.0.113.5"},
	}
}

func mustLoad(t *testing.T, dir string, o Options) *PKI {
	t.Helper()
	p, err := Load(dir, o, testLog())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func servingCert(t *testing.T, p *PKI) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(p.serving.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var allFiles = []string{CACertFile, CAKeyFile, ServingCertFile, ServingKeyFile, AdminCertFile, AdminKeyFile}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range allFiles {
		m[f] = readFile(t, filepath.Join(dir, "server", "tls", f))
	}
	m["token"] = readFile(t, filepath.Join(dir, "server", "token"))
	return m
}

func TestLoadGeneratesThenReuses(t *testing.T) {
	dir := t.TempDir()
	p1 := mustLoad(t, dir, testOpts())
	tlsDir := filepath.Join(dir, "server", "tls")
	if p1.Dir() != tlsDir {
		t.Errorf("Dir() = %s, want %s", p1.Dir(), tlsDir)
	}
	for _, f := range allFiles {
		want := os.FileMode(0o644)
		if strings.HasSuffix(f, ".key") {
			want = 0o600
		}
		if got := mode(t, filepath.Join(tlsDir, f)); got != want {
			t.Errorf("%s mode %v, want %v", f, got, want)
		}
	}
	if got := mode(t, filepath.Join(dir, "server", "token")); got != 0o600 {
		t.Errorf("token mode %v, want 0600", got)
	}
	if got := mode(t, tlsDir); got != 0o700 {
		t.Errorf("tls dir mode %v, want 0700", got)
	}

	ca := p1.caCert
	if !ca.IsCA || ca.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA: IsCA=%v alg=%v", ca.IsCA, ca.PublicKeyAlgorithm)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < 10*365*24*time.Hour {
		t.Errorf("CA lifetime %v, want >= 10 years", life)
	}
	before := snapshot(t, dir)

	p2 := mustLoad(t, dir, testOpts())
	after := snapshot(t, dir)
	for name, b := range before {
		if !bytes.Equal(b, after[name]) {
			t.Errorf("%s changed on second Load", name)
		}
	}
	if !bytes.Equal(p1.CACertPEM(), p2.CACertPEM()) || p1.Token() != p2.Token() {
		t.Error("second Load returned different CA or token")
	}
	tok := p2.Token()
	if tok.CAHash != CAHash(p2.CACertPEM()) || tok.Username != "server" || len(tok.Secret) != 32 {
		t.Errorf("token %+v", tok)
	}
	if got := strings.TrimSpace(string(after["token"])); got != tok.String() {
		t.Errorf("token file %q, want %q", got, tok.String())
	}
	if err := tok.VerifyCA(readFile(t, filepath.Join(tlsDir, CACertFile))); err != nil {
		t.Errorf("token does not pin the CA file: %v", err)
	}
}

func TestServingSANs(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	c := servingCert(t, p)
	for _, n := range []string{"orchtest-host", "orchtest-node1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "api.example.test"} {
		if !slices.Contains(c.DNSNames, n) {
			t.Errorf("DNS SAN %q missing from %v", n, c.DNSNames)
		}
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.43.0.1", "192.0.2.10", "2001:db8::10", "198.51.100.7", "203.0.113.5"} {
		if !slices.Contains(ips, ip) {
			t.Errorf("IP SAN %s missing from %v", ip, ips)
		}
	}
	if len(ips) != 7 || len(c.DNSNames) != 8 {
		t.Errorf("unexpected extra SANs: %v %v", c.DNSNames, ips)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("serving cert lacks server auth usage")
	}
	for _, host := range []string{"kubernetes.default.svc", "10.43.0.1", "::1", "api.example.test"} {
		if _, err := c.Verify(x509.VerifyOptions{DNSName: host, Roots: p.CAPool()}); err != nil {
			t.Errorf("verify serving cert for %s: %v", host, err)
		}
	}

	o := testOpts()
	o.ClusterDomain = "corp.internal"
	p2 := mustLoad(t, t.TempDir(), o)
	if !slices.Contains(servingCert(t, p2).DNSNames, "kubernetes.default.svc.corp.internal") {
		t.Error("cluster domain not honored")
	}
}

func TestServingRegeneratedWhenSANsChange(t *testing.T) {
	dir := t.TempDir()
	p1 := mustLoad(t, dir, testOpts())
	before := snapshot(t, dir)

	// Same SANs in another order and case: reused.
	o := testOpts()
	o.ExtraSANs = []string{"203.0.113.5", "API.example.test"}
	o.NodeIPs = []net.IP{net.ParseIP("2001:db8::10"), net.ParseIP("192.0.2.10").To16()}
	p2 := mustLoad(t, dir, o)
	if !bytes.Equal(servingCert(t, p1).Raw, servingCert(t, p2).Raw) {
		t.Error("serving cert regenerated for an equal SAN set")
	}

	o.ExtraSANs = append(o.ExtraSANs, "new.example.test")
	p3 := mustLoad(t, dir, o)
	after := snapshot(t, dir)
	if !slices.Contains(servingCert(t, p3).DNSNames, "new.example.test") {
		t.Error("new SAN missing after regeneration")
	}
	for _, f := range []string{CACertFile, CAKeyFile, AdminCertFile, AdminKeyFile, "token"} {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed although only SANs did", f)
		}
	}
	if bytes.Equal(before[ServingCertFile], after[ServingCertFile]) || bytes.Equal(before[ServingKeyFile], after[ServingKeyFile]) {
		t.Error("serving cert/key not regenerated")
	}
}

func TestLeafCertsRenewedNearExpiry(t *testing.T) {
	dir := t.TempDir()
	mustLoad(t, dir, testOpts())
	before := snapshot(t, dir)

	o := testOpts()
	o.Now = func() time.Time { return time.Now().Add(200 * 24 * time.Hour) }
	mustLoad(t, dir, o) // 165 days left: kept
	if after := snapshot(t, dir); !bytes.Equal(before[ServingCertFile], after[ServingCertFile]) {
		t.Error("serving cert renewed with 165 days left")
	}

	o.Now = func() time.Time { return time.Now().Add(300 * 24 * time.Hour) }
	p := mustLoad(t, dir, o) // 65 days left: renewed
	after := snapshot(t, dir)
	for _, f := range []string{ServingCertFile, AdminCertFile} {
		if bytes.Equal(before[f], after[f]) {
			t.Errorf("%s not renewed with 65 days left", f)
		}
	}
	if !bytes.Equal(before[CACertFile], after[CACertFile]) || !bytes.Equal(before["token"], after["token"]) {
		t.Error("CA or token changed on renewal")
	}
	if c := servingCert(t, p); c.NotAfter.Before(time.Now().Add(600 * 24 * time.Hour)) {
		t.Errorf("renewed serving cert expires %v", c.NotAfter)
	}
}

func TestLeafNotSignedByCARegenerated(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	mustLoad(t, dir, testOpts())
	mustLoad(t, other, testOpts())
	for _, f := range []string{ServingCertFile, ServingKeyFile} {
		b := readFile(t, filepath.Join(other, "server", "tls", f))
		if err := os.WriteFile(filepath.Join(dir, "server", "tls", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := mustLoad(t, dir, testOpts())
	if _, err := servingCert(t, p).Verify(x509.VerifyOptions{Roots: p.CAPool()}); err != nil {
		t.Errorf("serving cert from another CA kept: %v", err)
	}
}

func TestLoadCorruptFilesFail(t *testing.T) {
	for _, f := range append(slices.Clone(allFiles), "token") {
		t.Run(f, func(t *testing.T) {
			dir := t.TempDir()
			mustLoad(t, dir, testOpts())
			path := filepath.Join(dir, "server", "tls", f)
			if f == "token" {
				path = filepath.Join(dir, "server", "token")
			}
			if err := os.WriteFile(path, []byte("garbage\x00 not pem\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			_, err := Load(dir, testOpts(), testLog())
			if err == nil {
				t.Fatalf("Load succeeded with corrupt %s", f)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name %s: %v", path, err)
			}
			after := snapshot(t, dir)
			for name := range before {
				if !bytes.Equal(before[name], after[name]) {
					t.Errorf("%s modified by failed Load", name)
				}
			}
		})
	}
}

func TestLoadTruncatedCertFails(t *testing.T) {
	dir := t.TempDir()
	mustLoad(t, dir, testOpts())
	path := filepath.Join(dir, "server", "tls", CACertFile)
	b := readFile(t, path)
	// A PEM block whose DER body is cut short.
	cut := strings.Replace(string(b), "\n-----END", "AAAA\n-----END", 1)
	if err := os.WriteFile(path, []byte(cut), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, testOpts(), testLog()); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("want error naming %s, got %v", path, err)
	}
}

func TestLoadCAHalfMissingOrMismatched(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, tlsDir, otherTLS string)
		want   string
	}{
		{"key missing", func(t *testing.T, d, _ string) { os.Remove(filepath.Join(d, CAKeyFile)) }, CAKeyFile},
		{"cert missing", func(t *testing.T, d, _ string) { os.Remove(filepath.Join(d, CACertFile)) }, CACertFile},
		{"key of another CA", func(t *testing.T, d, o string) {
			if err := os.WriteFile(filepath.Join(d, CAKeyFile), readFile(t, filepath.Join(o, CAKeyFile)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, CAKeyFile},
		{"not a CA", func(t *testing.T, d, _ string) {
			for _, p := range [][2]string{{ServingCertFile, CACertFile}, {ServingKeyFile, CAKeyFile}} {
				if err := os.WriteFile(filepath.Join(d, p[1]), readFile(t, filepath.Join(d, p[0])), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, "is not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, other := t.TempDir(), t.TempDir()
			mustLoad(t, dir, testOpts())
			mustLoad(t, other, testOpts())
			tlsDir := filepath.Join(dir, "server", "tls")
			tc.mutate(t, tlsDir, filepath.Join(other, "server", "tls"))
			left := map[string][]byte{}
			for _, f := range []string{CACertFile, CAKeyFile} {
				if b, err := os.ReadFile(filepath.Join(tlsDir, f)); err == nil {
					left[f] = b
				}
			}
			_, err := Load(dir, testOpts(), testLog())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error mentioning %q, got %v", tc.want, err)
			}
			for _, f := range []string{CACertFile, CAKeyFile} {
				b, err := os.ReadFile(filepath.Join(tlsDir, f))
				if _, had := left[f]; had != (err == nil) || !bytes.Equal(b, left[f]) {
					t.Errorf("%s created or changed by failed Load", f)
				}
			}
		})
	}
}

func TestLoadExpiredCAFails(t *testing.T) {
	dir := t.TempDir()
	mustLoad(t, dir, testOpts())
	o := testOpts()
	o.Now = func() time.Time { return time.Now().Add(11 * 365 * 24 * time.Hour) }
	if _, err := Load(dir, o, testLog()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("want expired CA error, got %v", err)
	}
}

func TestLoadBadOptions(t *testing.T) {
	o := testOpts()
	o.ServiceIP = nil
	if _, err := Load(t.TempDir(), o, testLog()); err == nil || !strings.Contains(err.Error(), "ServiceIP") {
		t.Errorf("missing ServiceIP: %v", err)
	}
	for _, san := range []string{"bad name", "-lead.example", "a..b", strings.Repeat("x", 64) + ".example"} {
		o := testOpts()
		o.ExtraSANs = []string{san}
		dir := t.TempDir()
		if _, err := Load(dir, o, testLog()); err == nil || !strings.Contains(err.Error(), "SAN") {
			t.Errorf("SAN %q: want error, got %v", san, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "server")); err == nil {
			t.Errorf("SAN %q: files created despite the error", san)
		}
	}
	o = testOpts()
	o.ExtraSANs = []string{"*.apps.example.test"}
	p := mustLoad(t, t.TempDir(), o)
	if !slices.Contains(servingCert(t, p).DNSNames, "*.apps.example.test") {
		t.Error("wildcard SAN missing")
	}
}
