package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Dir returns the directory holding the certificates (<data-dir>/server/tls).
func (p *PKI) Dir() string { return p.dir }

// CACertPEM returns the cluster CA certificate exactly as stored: the bytes
// whose SHA-256 the join token carries, to be served to joining agents.
func (p *PKI) CACertPEM() []byte { return slices.Clone(p.caPEM) }

// CAPool returns a new pool holding the cluster CA.
func (p *PKI) CAPool() *x509.CertPool { return p.caPool.Clone() }

// Token returns the full join token (K10<ca-hash>::server:<secret>).
func (p *PKI) Token() Token { return p.token }

// VerifySecret reports, in constant time, whether secret is the join
// token's secret. Servers use it to authenticate agents presenting the
// token.
func (p *PKI) VerifySecret(secret string) bool { return SecretEqual(secret, p.token.Secret) }

// ServerTLSConfig returns a new TLS configuration for the API server: the
// serving certificate, TLS 1.2 at least, HTTP/2 and HTTP/1.1, and client
// certificates requested but not required (bearer tokens must keep
// working); a client certificate that is presented must chain to the
// cluster CA, else the handshake fails. Use ClientIdentity on the
// connection state to read the authenticated user.
func (p *PKI) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.serving},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.caPool.Clone(),
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ClientIdentity returns the user (certificate CN) and groups (O) of a
// client certificate verified by a ServerTLSConfig handshake; ok is false
// when the client presented no certificate.
func ClientIdentity(cs *tls.ConnectionState) (user string, groups []string, ok bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", nil, false
	}
	leaf := cs.VerifiedChains[0][0]
	return leaf.Subject.CommonName, slices.Clone(leaf.Subject.Organization), true
}

// AdminCredentials returns the admin client certificate and key (PEM),
// CN=system:admin, O=system:masters.
func (p *PKI) AdminCredentials() (certPEM, keyPEM []byte) {
	return slices.Clone(p.adminCert), slices.Clone(p.adminKey)
}

// WriteAdminKubeconfig writes a kubeconfig for the admin user pointing at
// serverURL, as WriteKubeconfig.
func (p *PKI) WriteAdminKubeconfig(path string, mode os.FileMode, serverURL string) error {
	return WriteKubeconfig(path, mode, serverURL, p.caPEM, p.adminCert, p.adminKey)
}

// IssueClientCert signs a new client certificate (new ECDSA P-256 key,
// ExtKeyUsage client auth) for commonName and orgs, valid for ttl but never
// past the CA's expiry. Agents get CN=system:node:<name>, O=system:nodes.
func (p *PKI) IssueClientCert(commonName string, orgs []string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, nil, errors.New("issue client certificate: common name is empty")
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("issue client certificate for %q: ttl %v must be positive", commonName, ttl)
	}
	for _, o := range orgs {
		if strings.TrimSpace(o) == "" {
			return nil, nil, fmt.Errorf("issue client certificate for %q: empty organization", commonName)
		}
	}
	now := p.now()
	return signLeaf(p.caCert, p.caKey, leafSpec{
		commonName: commonName,
		orgs:       slices.Clone(orgs),
		usage:      x509.ExtKeyUsageClientAuth,
		notAfter:   now.Add(ttl),
	}, now)
}
