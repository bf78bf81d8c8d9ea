package pki

import (
	"errors"
	"fmt"
	"net/url"
	"os"

	"sigs.k8s.io/yaml"
)

// DefaultKubeconfigMode is the file mode WriteKubeconfig uses when given 0.
const DefaultKubeconfigMode os.FileMode = 0o600

// The kubeconfig schema (clientcmd/api/v1), reduced to what orch writes.
// Plain structs keep client-go's clientcmd and its dependencies out of the
// orch binary's server and agent paths.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
	Preferences    struct{}       `json:"preferences"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthorityData []byte `json:"certificate-authority-data"`
	} `json:"cluster"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		ClientCertificateData []byte `json:"client-certificate-data"`
		ClientKeyData         []byte `json:"client-key-data"`
	} `json:"user"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

const kubeconfigName = "default"

// Kubeconfig returns a standard kubeconfig (YAML) with a cluster, a user
// and a context all named "default": the cluster is serverURL (https) with
// the CA inlined as certificate-authority-data, the user authenticates with
// the inlined client certificate and key. Agents use it with the
// certificate IssueClientCert gave them.
func Kubeconfig(serverURL string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: server URL %q: %w", serverURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig: server URL %q must be https://host[:port]", serverURL)
	}
	if len(caPEM) == 0 || len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("kubeconfig: CA, client certificate and client key are all required")
	}
	if _, err := parseCertPEM("CA certificate", caPEM); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cert, err := parseCertPEM("client certificate", certPEM)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	key, err := parseKeyPEM("client key", keyPEM)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if !publicKeyMatches(cert, key) {
		return nil, errors.New("kubeconfig: client key does not match the client certificate")
	}

	kc := kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: kubeconfigName}
	var c namedCluster
	c.Name = kubeconfigName
	c.Cluster.Server = serverURL
	c.Cluster.CertificateAuthorityData = caPEM
	var usr namedUser
	usr.Name = kubeconfigName
	usr.User.ClientCertificateData = certPEM
	usr.User.ClientKeyData = keyPEM
	var ctx namedContext
	ctx.Name = kubeconfigName
	ctx.Context.Cluster = kubeconfigName
	ctx.Context.User = kubeconfigName
	kc.Clusters = []namedCluster{c}
	kc.Users = []namedUser{usr}
	kc.Contexts = []namedContext{ctx}
	out, err := yaml.Marshal(&kc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: encode: %w", err)
	}
	return out, nil
}

// WriteKubeconfig writes Kubeconfig(serverURL, caPEM, certPEM, keyPEM) to
// path atomically, creating missing parent directories (mode 0700). The file
// gets exactly mode (not reduced by the umask; 0 means 0600), so an
// explicit mode such as k3s's --write-kubeconfig-mode 644 is honored.
func WriteKubeconfig(path string, mode os.FileMode, serverURL string, caPEM, certPEM, keyPEM []byte) error {
	if mode == 0 {
		mode = DefaultKubeconfigMode
	}
	if mode&^os.ModePerm != 0 {
		return fmt.Errorf("write kubeconfig %s: mode %v is not a permission mode", path, mode)
	}
	b, err := Kubeconfig(serverURL, caPEM, certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return writeFileAtomic(path, b, mode)
}
