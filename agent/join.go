package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/orch-dev/orch/server/pki"
)

// JoinConfig says how to join a cluster.
type JoinConfig struct {
	// ServerURL is the server's https://host:port.
	ServerURL string
	// Token is the join token (K10<ca hash>::server:<secret>, or a bare secret).
	Token string
	// NodeName names the node's client certificate.
	NodeName string
	// Dir keeps the credentials (<data-dir>/agent).
	Dir string
	// Timeout bounds each bootstrap request (default 30s).
	Timeout time.Duration
	// RetryMax caps the wait between attempts while the server cannot be
	// reached or answers 5xx (default 10s; the first wait is a second).
	// Join waits for such a server until ctx ends; a refused token or CA
	// fails at once.
	RetryMax time.Duration
}

// unreachable marks a join failure worth retrying: the server could not
// be reached, or answered with a server error.
type unreachable struct{ err error }

func (u unreachable) Error() string { return u.err.Error() }
func (u unreachable) Unwrap() error { return u.err }

// requestError classifies a failed bootstrap request: certificate failures
// and a peer that does not speak TLS are final, other transport errors
// (refused, reset, timeout) mean the server is not (yet) there.
func requestError(err error) error {
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var notTLS tls.RecordHeaderError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &notTLS) {
		return err
	}
	return unreachable{err}
}

// Credential files under JoinConfig.Dir.
const (
	CACertFile     = "server-ca.crt"
	ClientCertFile = "client-node.crt"
	ClientKeyFile  = "client-node.key"
	KubeconfigFile = "node.kubeconfig"
)

// Join obtains (or reuses) the node's credentials and returns a client
// config for the API server. The CA is fetched from /cacerts without
// verification and pinned against the token's hash (a bare-secret token
// trusts it with a warning); the node client certificate comes from
// /v1-orch/client-cert with the token's secret. Both are kept in Dir with
// a kubeconfig and reused on restart while they match the server and name.
func Join(ctx context.Context, cfg JoinConfig, log *slog.Logger) (*rest.Config, error) {
	if !strings.HasPrefix(cfg.ServerURL, "https://") {
		return nil, fmt.Errorf("join: server URL %q must start with https://", cfg.ServerURL)
	}
	cfg.ServerURL = strings.TrimRight(cfg.ServerURL, "/")
	tok, err := pki.ParseToken(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if cfg.NodeName == "" || cfg.Dir == "" {
		return nil, errors.New("join: node name and credentials dir are required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 10 * time.Second
	}
	kc := filepath.Join(cfg.Dir, KubeconfigFile)
	if rc, ok := reuse(cfg, tok, kc, log); ok {
		return rc, nil
	}
	for delay := time.Second; ; delay = min(2*delay, cfg.RetryMax) {
		rc, err := join(ctx, cfg, tok, kc, log)
		var u unreachable
		if err == nil || !errors.As(err, &u) {
			return rc, err
		}
		log.Warn("waiting for the server", "server", cfg.ServerURL, "err", err, "retry", delay)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("join: %w (last: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// join makes one attempt: fetch and check the CA, get the node
// certificate, write the credentials.
func join(ctx context.Context, cfg JoinConfig, tok pki.Token, kc string, log *slog.Logger) (*rest.Config, error) {
	caPEM, err := fetchCA(ctx, cfg)
	if err != nil {
		return nil, err
	}
	switch err := tok.VerifyCA(caPEM); {
	case errors.Is(err, pki.ErrNoCAHash):
		log.Warn("join token has no CA hash: trusting the server's CA certificate as served (use the full K10 token to pin it)",
			"server", cfg.ServerURL, "caHash", pki.CAHash(caPEM))
	case err != nil:
		return nil, fmt.Errorf("join: refusing server %s: %w", cfg.ServerURL, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("join: server %s served no PEM certificate at /cacerts", cfg.ServerURL)
	}
	body, err := json.Marshal(map[string]string{"nodeName": cfg.NodeName})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.ServerURL+"/v1-orch/client-cert", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	req.SetBasicAuth("node", tok.String())
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join: request node certificate: %w", requestError(err))
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("join: read node certificate: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("join: server %s rejected the token (401)", cfg.ServerURL)
	}
	if resp.StatusCode >= 500 {
		return nil, unreachable{fmt.Errorf("join: node certificate: %s: %s", resp.Status, strings.TrimSpace(string(rb)))}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("join: node certificate: %s: %s", resp.Status, strings.TrimSpace(string(rb)))
	}
	var cc struct{ Cert, Key, CA []byte }
	if err := json.Unmarshal(rb, &cc); err != nil {
		return nil, fmt.Errorf("join: decode node certificate: %w", err)
	}
	if _, err := tls.X509KeyPair(cc.Cert, cc.Key); err != nil {
		return nil, fmt.Errorf("join: server sent an unusable key pair: %w", err)
	}
	for name, b := range map[string][]byte{CACertFile: caPEM, ClientCertFile: cc.Cert, ClientKeyFile: cc.Key} {
		if err := writeFileAtomic(filepath.Join(cfg.Dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
	}
	if err := pki.WriteKubeconfig(kc, 0o600, cfg.ServerURL, caPEM, cc.Cert, cc.Key); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	log.Info("joined cluster", "server", cfg.ServerURL, "node", cfg.NodeName)
	return restConfig(kc)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("join: kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "orch-agent"
	return rc, nil
}

// reuse returns the saved credentials when they are for this server, CA
// pin and node name, and the certificate is not about to expire.
func reuse(cfg JoinConfig, tok pki.Token, kc string, log *slog.Logger) (*rest.Config, bool) {
	caPEM, err := os.ReadFile(filepath.Join(cfg.Dir, CACertFile))
	if err != nil {
		return nil, false
	}
	if tok.CAHash != "" && tok.VerifyCA(caPEM) != nil {
		log.Info("saved CA does not match the token; joining again")
		return nil, false
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(cfg.Dir, ClientCertFile), filepath.Join(cfg.Dir, ClientKeyFile))
	if err != nil || len(pair.Certificate) == 0 {
		return nil, false
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || cert.Subject.CommonName != "system:node:"+cfg.NodeName || time.Until(cert.NotAfter) < 24*time.Hour {
		return nil, false
	}
	rc, err := restConfig(kc)
	if err != nil || rc.Host != cfg.ServerURL {
		return nil, false
	}
	log.Info("reusing node credentials", "dir", cfg.Dir)
	return rc, true
}

// fetchCA reads /cacerts without verifying the server (the caller pins it).
func fetchCA(ctx context.Context, cfg JoinConfig) ([]byte, error) {
	hc := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // pinned by hash below
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.ServerURL+"/cacerts", nil)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join: fetch CA from %s: %w", cfg.ServerURL, requestError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("join: fetch CA: %w", unreachable{err})
	}
	if resp.StatusCode >= 500 {
		return nil, unreachable{fmt.Errorf("join: fetch CA from %s: %s", cfg.ServerURL, resp.Status)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("join: fetch CA from %s: %s", cfg.ServerURL, resp.Status)
	}
	return b, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
