package image

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"
)

// Registries is registries.yaml, the shape of k3s's:
//
//	mirrors:
//	  docker.io:
//	    endpoint: ["https://mirror.example.com:5000", "http://10.0.0.1:5000"]
//	    rewrite: {"^library/(.*)": "dockerhub/$1"}
//	configs:
//	  mirror.example.com:5000:
//	    auth: {username: u, password: p}     # or auth: <base64 user:pass>, or identitytoken
//	    tls: {ca_file: /etc/orch/ca.pem, cert_file: ..., key_file: ..., insecure_skip_verify: false}
//
// Mirrors are keyed by the registry of the image name ("docker.io" for
// Docker Hub; "*" applies to every registry without its own entry); their
// endpoints are tried in order, then the registry itself. Rewrites (regular
// expression → replacement on the repository path, first match in key
// order) apply to mirror endpoints only. Configs are keyed by endpoint
// host[:port]; Docker Hub's own endpoint also uses a "docker.io" entry.
type Registries struct {
	Mirrors map[string]Mirror         `json:"mirrors,omitempty"`
	Configs map[string]RegistryConfig `json:"configs,omitempty"`
}

// Mirror lists endpoints serving a registry's images.
type Mirror struct {
	Endpoints []string          `json:"endpoint,omitempty"`
	Rewrites  map[string]string `json:"rewrite,omitempty"`
}

// RegistryConfig is the credentials and TLS settings of one endpoint host.
type RegistryConfig struct {
	Auth *RegistryAuth `json:"auth,omitempty"`
	TLS  *RegistryTLS  `json:"tls,omitempty"`
}

// RegistryAuth is basic credentials (username/password or base64 auth) or
// an identity (refresh) token.
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// RegistryTLS is the TLS client configuration of an endpoint.
type RegistryTLS struct {
	CAFile             string `json:"ca_file,omitempty"`
	CertFile           string `json:"cert_file,omitempty"`
	KeyFile            string `json:"key_file,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
}

// LoadRegistries reads a registries.yaml; a missing file (or "") is an
// empty configuration. Unknown fields are an error, so typos do not pass
// silently.
func LoadRegistries(file string) (*Registries, error) {
	r := &Registries{}
	if file == "" {
		return r, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registries config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, r); err != nil {
		return nil, fmt.Errorf("registries config %s: %w", file, err)
	}
	for reg, m := range r.Mirrors {
		for _, e := range m.Endpoints {
			if _, _, err := parseEndpoint(e); err != nil {
				return nil, fmt.Errorf("registries config %s: mirror %q: %w", file, reg, err)
			}
		}
		for re := range m.Rewrites {
			if _, err := regexp.Compile(re); err != nil {
				return nil, fmt.Errorf("registries config %s: mirror %q rewrite: %w", file, reg, err)
			}
		}
	}
	return r, nil
}

// parseEndpoint turns "https://host:port" (or a bare host) into the host
// and whether it is plain http.
func parseEndpoint(e string) (host string, insecure bool, err error) {
	if !strings.Contains(e, "://") {
		e = "https://" + e
	}
	u, err := url.Parse(e)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", e, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", e)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" && p != "/v2" {
		return "", false, fmt.Errorf("endpoint %q: paths other than /v2 are not supported", e)
	}
	if u.Host == "" {
		return "", false, fmt.Errorf("endpoint %q: no host", e)
	}
	return u.Host, u.Scheme == "http", nil
}

// endpoint is one place to pull a reference from.
type endpoint struct {
	host     string // host[:port] as ggcr names it
	insecure bool
	mirror   bool
	repo     string // repository path at this endpoint (after rewrites)
}

// endpoints lists where to pull r from: mirrors in order, then the registry.
func (rc *Registries) endpoints(r reference) []endpoint {
	var out []endpoint
	m, ok := rc.Mirrors[r.Registry]
	if !ok {
		m = rc.Mirrors["*"]
	}
	for _, e := range m.Endpoints {
		host, insecure, err := parseEndpoint(e)
		if err != nil {
			continue // validated at load
		}
		out = append(out, endpoint{host: host, insecure: insecure, mirror: true, repo: rewrite(m.Rewrites, r.Repository)})
	}
	host := r.Registry
	if host == DockerHub {
		host = name.DefaultRegistry
	}
	return append(out, endpoint{host: host, repo: r.Repository})
}

func rewrite(rules map[string]string, repo string) string {
	keys := make([]string, 0, len(rules))
	for k := range rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		re, err := regexp.Compile(k)
		if err != nil {
			continue
		}
		if re.MatchString(repo) {
			return re.ReplaceAllString(repo, rules[k])
		}
	}
	return repo
}

// config finds the settings for an endpoint host.
func (rc *Registries) config(host string) (RegistryConfig, bool) {
	if c, ok := rc.Configs[host]; ok {
		return c, true
	}
	if host == name.DefaultRegistry || host == "registry-1.docker.io" {
		c, ok := rc.Configs[DockerHub]
		return c, ok
	}
	return RegistryConfig{}, false
}

// remoteOptions are the ggcr options for pulling from host: its
// credentials and TLS settings.
func (rc *Registries) remoteOptions(host string) ([]remote.Option, error) {
	c, _ := rc.config(host)
	var opts []remote.Option
	if a := c.Auth; a != nil {
		switch {
		case a.IdentityToken != "":
			opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{IdentityToken: a.IdentityToken})))
		case a.Auth != "":
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				return nil, fmt.Errorf("registry %s: auth is not base64 of user:password", host)
			}
			opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
		case a.Username != "" || a.Password != "":
			opts = append(opts, remote.WithAuth(&authn.Basic{Username: a.Username, Password: a.Password}))
		}
	}
	if t := c.TLS; t != nil {
		tc := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // the user asked for it per host
		if t.CAFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("registry %s ca_file: %w", host, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry %s ca_file %s: no PEM certificates", host, t.CAFile)
			}
			tc.RootCAs = pool
		}
		if t.CertFile != "" || t.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("registry %s client certificate: %w", host, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr := remote.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		opts = append(opts, remote.WithTransport(tr))
	}
	return opts, nil
}
