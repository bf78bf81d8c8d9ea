package server

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/orch-dev/orch/server/apiserver"
	"github.com/orch-dev/orch/server/pki"
	"github.com/orch-dev/orch/server/tunnel"
)

// authenticator identifies API callers by client certificate (CN user, O
// groups) or by a bearer token equal to the cluster token's secret, which
// makes the caller an administrator (the token already lets a machine join
// the cluster, as with k3s).
type authenticator struct{ pki *pki.PKI }

func (a *authenticator) Authenticate(r *http.Request) (*apiserver.User, bool, error) {
	if user, groups, ok := pki.ClientIdentity(r.TLS); ok {
		return &apiserver.User{Name: user, Groups: groups}, true, nil
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok := strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
		if t, err := pki.ParseToken(tok); err == nil && a.pki.VerifySecret(t.Secret) {
			return &apiserver.User{Name: "system:admin", Groups: []string{"system:masters", "system:authenticated"}}, true, nil
		}
	}
	return nil, false, nil
}

// handler serves the join endpoints next to the API: /cacerts (anonymous,
// agents pin it against the token's hash) and /v1-orch/client-cert (agents
// authenticated by the token get their node client certificate).
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cacerts", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.pki.CACertPEM())
	})
	mux.HandleFunc("POST /v1-orch/client-cert", s.serveClientCert)
	mux.HandleFunc("GET "+tunnel.ControlPath, s.tunnel.ServeControl)
	mux.HandleFunc("GET "+tunnel.DialBackPath, s.tunnel.ServeDialBack)
	mux.Handle("/", s.api)
	if s.cfg.EnablePprof {
		a := &authenticator{pki: s.pki}
		for path, h := range map[string]http.HandlerFunc{
			"/debug/pprof/": pprof.Index, "/debug/pprof/cmdline": pprof.Cmdline, "/debug/pprof/profile": pprof.Profile,
			"/debug/pprof/symbol": pprof.Symbol, "/debug/pprof/trace": pprof.Trace,
		} {
			mux.Handle(path, adminOnly(a, h))
		}
	}
	return mux
}

// adminOnly passes requests of members of system:masters to h and answers
// everyone else 403.
func adminOnly(a *authenticator, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, ok, err := a.Authenticate(r); err == nil && ok && slices.Contains(u.Groups, "system:masters") {
			h.ServeHTTP(w, r)
			return
		}
		http.Error(w, "forbidden: profiles are for cluster administrators", http.StatusForbidden)
	})
}

// nodeIdentity is the node an agent's client certificate names.
func nodeIdentity(r *http.Request) (string, bool) {
	user, groups, ok := pki.ClientIdentity(r.TLS)
	if !ok {
		return "", false
	}
	node, isNode := strings.CutPrefix(user, "system:node:")
	if !isNode || node == "" {
		return "", false
	}
	for _, g := range groups {
		if g == "system:nodes" {
			return node, true
		}
	}
	return "", false
}

// clientCertRequest asks for a node's client certificate.
type clientCertRequest struct {
	NodeName string `json:"nodeName"`
}

// ClientCertResponse carries a node's credentials.
type ClientCertResponse struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
	CA   []byte `json:"ca"`
}

func (s *Server) serveClientCert(w http.ResponseWriter, r *http.Request) {
	_, secret, ok := r.BasicAuth()
	if !ok {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			secret, ok = strings.TrimPrefix(h, "Bearer "), true
		}
	}
	if t, err := pki.ParseToken(secret); !ok || err != nil || !s.pki.VerifySecret(t.Secret) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var req clientCertRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if msgs := validation.IsDNS1123Subdomain(req.NodeName); len(msgs) > 0 {
		http.Error(w, "invalid node name: "+strings.Join(msgs, "; "), http.StatusBadRequest)
		return
	}
	cert, key, err := s.pki.IssueClientCert("system:node:"+req.NodeName, []string{"system:nodes"}, 365*24*time.Hour)
	if err != nil {
		s.log.Error("issue node certificate", "node", req.NodeName, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.log.Info("issued node client certificate", "node", req.NodeName)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ClientCertResponse{Cert: cert, Key: key, CA: s.pki.CACertPEM()})
}
