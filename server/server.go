// Package server is the composition root of orch's control plane: it opens
// the store, loads the cluster PKI and the Secrets encryption key, serves the
// Kubernetes API over HTTPS, bootstraps the built-in objects, writes the
// admin kubeconfig and runs the controllers, all under one context.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/gcpace"
	"github.com/orch-dev/orch/internal/inproc"
	"github.com/orch-dev/orch/internal/memtrim"
	"github.com/orch-dev/orch/server/apiserver"
	"github.com/orch-dev/orch/server/pki"
	"github.com/orch-dev/orch/server/tunnel"
	"github.com/orch-dev/orch/store"
)

// Config is the server's configuration (the `orch server` flags).
type Config struct {
	DataDir             string
	BindAddress         netip.Addr
	HTTPSPort           int
	AdvertiseAddress    netip.Addr
	NodeName            string
	NodeIPs             []netip.Addr
	Token               string
	WriteKubeconfig     string
	WriteKubeconfigMode os.FileMode
	ClusterCIDR         netip.Prefix
	ServiceCIDR         netip.Prefix
	ClusterDNS          netip.Addr
	NodePortMin         int
	NodePortMax         int
	TLSSANs             []string
	DisableAgent        bool
	// DisablePodFastPath keeps the embedded agent's pod traffic on the
	// kernel's normal path (podnet.Config.NoFastPath).
	DisablePodFastPath bool
	// NodeLabels and NodeTaints are added to this machine's Node when the
	// embedded agent registers it (as `orch agent --node-label/--node-taint`).
	NodeLabels map[string]string
	NodeTaints []corev1.Taint
	// CgroupRoot is the cgroup parent of the pods of the embedded agent.
	CgroupRoot string
	// NotReadyTolerationSeconds and UnreachableTolerationSeconds set the
	// default NoExecute tolerations of pods (300 s).
	NotReadyTolerationSeconds, UnreachableTolerationSeconds int64
	// ResolvConf lists the upstream resolvers of cluster DNS and of pods
	// with dnsPolicy Default (default /etc/resolv.conf).
	ResolvConf string
	// EnablePprof serves Go's profiles under /debug/pprof/ to cluster
	// administrators (k3s's --enable-pprof).
	EnablePprof bool
	Version     string
}

// Validate checks the configuration before anything starts.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if c.HTTPSPort < 0 || c.HTTPSPort > 65535 {
		return fmt.Errorf("--https-listen-port %d is not a valid port", c.HTTPSPort)
	}
	if !c.ClusterCIDR.IsValid() || !c.ServiceCIDR.IsValid() {
		return errors.New("--cluster-cidr and --service-cidr are required")
	}
	if c.ClusterCIDR.Overlaps(c.ServiceCIDR) {
		return fmt.Errorf("--cluster-cidr %s overlaps --service-cidr %s", c.ClusterCIDR, c.ServiceCIDR)
	}
	if c.ServiceCIDR.Addr().Is4() && c.ServiceCIDR.Bits() > 28 {
		return fmt.Errorf("--service-cidr %s is too small: it needs at least /28", c.ServiceCIDR)
	}
	if c.ClusterCIDR.Addr().Is4() && c.ClusterCIDR.Bits() > 24 {
		return fmt.Errorf("--cluster-cidr %s is too small: each node takes a /24", c.ClusterCIDR)
	}
	if c.ClusterDNS.IsValid() && !c.ServiceCIDR.Contains(c.ClusterDNS) {
		return fmt.Errorf("--cluster-dns %s is not inside --service-cidr %s", c.ClusterDNS, c.ServiceCIDR)
	}
	if c.NodePortMin <= 0 || c.NodePortMax > 65535 || c.NodePortMin > c.NodePortMax {
		return fmt.Errorf("--service-node-port-range %d-%d is not a valid range", c.NodePortMin, c.NodePortMax)
	}
	return nil
}

// Server is the control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ready atomic.Bool
	port  atomic.Int32

	// Set while running.
	api    *apiserver.Server
	pki    *pki.PKI
	store  *store.DB
	tunnel *tunnel.Broker
}

// New checks cfg and returns a server ready to Run.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log}, nil
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	start := time.Now()
	restoreGC := startupGC()
	defer restoreGC()
	if len(s.cfg.NodeIPs) == 0 {
		// As k3s: without --node-ip the machine's first global address is
		// the node IP, in the serving certificate, advertised to agents and
		// behind the kubernetes Service.
		if ip, err := defaultNodeIP(); err == nil {
			s.cfg.NodeIPs = []netip.Addr{ip}
		} else {
			s.log.Warn("no node IP found; the serving certificate covers only loopback and --tls-san", "err", err)
		}
	}
	cfg := s.cfg
	dbPath := filepath.Join(cfg.DataDir, "server", "db", "state.db")
	st, err := store.Open(store.Config{Path: dbPath}, s.log.With("component", "store"))
	if err != nil {
		return err
	}
	defer st.Close()
	s.store = st

	firstIP := cfg.ServiceCIDR.Masked().Addr().Next()
	var nodeIPs []net.IP
	for _, ip := range cfg.NodeIPs {
		nodeIPs = append(nodeIPs, ip.AsSlice())
	}
	var adv net.IP
	if cfg.AdvertiseAddress.IsValid() {
		adv = cfg.AdvertiseAddress.AsSlice()
	}
	p, err := pki.Load(cfg.DataDir, pki.Options{
		NodeName: cfg.NodeName, NodeIPs: nodeIPs, AdvertiseIP: adv, ServiceIP: firstIP.AsSlice(),
		ExtraSANs: append(slices.Clip(cfg.TLSSANs), bindSANs(cfg.BindAddress)...), Token: cfg.Token,
	}, s.log.With("component", "pki"))
	if err != nil {
		return err
	}
	s.pki = p
	enc, err := loadEncryption(cfg.DataDir, s.log.With("component", "encryption"))
	if err != nil {
		return err
	}

	api, err := apiserver.New(apiserver.Config{
		ServiceCIDR: cfg.ServiceCIDR,
		NodePortMin: cfg.NodePortMin,
		NodePortMax: cfg.NodePortMax,
		Version:     versionInfo(cfg.Version),

		NotReadyTolerationSeconds:    cfg.NotReadyTolerationSeconds,
		UnreachableTolerationSeconds: cfg.UnreachableTolerationSeconds,
		Ready: func() error {
			if !s.ready.Load() {
				return errors.New("starting")
			}
			return nil
		},
	}, st, enc, &authenticator{pki: p}, s.log.With("component", "apiserver"))
	if err != nil {
		return err
	}
	s.api = api
	s.tunnel = tunnel.NewBroker(nodeIdentity, s.log.With("component", "tunnel"))
	api.SetNodeConnector(s.tunnel)

	ln, err := net.Listen("tcp", net.JoinHostPort(bindHost(cfg.BindAddress), strconv.Itoa(cfg.HTTPSPort)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.HTTPSPort, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	s.port.Store(int32(port))
	hs := &http.Server{
		Handler:           s.handler(),
		TLSConfig:         p.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := hs.Serve(tls.NewListener(ln, hs.TLSConfig))
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve API: %w", err)
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	})

	advertise := cfg.AdvertiseAddress
	if !advertise.IsValid() && len(cfg.NodeIPs) > 0 {
		advertise = cfg.NodeIPs[0]
	}
	if !advertise.IsValid() {
		advertise = netip.MustParseAddr("127.0.0.1")
	}
	if err := api.Bootstrap(ctx, advertise, port); err != nil {
		return err
	}
	if cfg.WriteKubeconfig != "" {
		url := "https://" + net.JoinHostPort(kubeconfigHost(cfg.BindAddress), strconv.Itoa(port))
		if err := p.WriteAdminKubeconfig(cfg.WriteKubeconfig, cfg.WriteKubeconfigMode, url); err != nil {
			return fmt.Errorf("write kubeconfig: %w", err)
		}
	}
	s.ready.Store(true)
	// Start-up parses schemas and certificates into garbage: hand the
	// freed pages back now rather than when the scavenger gets to them.
	restoreGC()
	debug.FreeOSMemory()
	s.log.Info("orch server ready", "address", ln.Addr().String(), "took", time.Since(start).Round(time.Millisecond),
		"kubeconfig", cfg.WriteKubeconfig)
	g.Go(func() error { return s.runComponents(ctx) })
	// After a burst of API work (thousands of objects created or deleted)
	// the freed heap goes back to the system once the server is quiet.
	trim := memtrim.New(memtrim.Config{}, s.log.With("component", "memtrim"))
	g.Go(func() error { return trim.Run(ctx) })
	// The JSON cache's bytes do not get the collector's 100 % room for
	// garbage (see gcpace); GOGC from the environment is left alone.
	if !gogcFromEnvironment() {
		pace := gcpace.New(gcpace.Config{}, s.log.With("component", "gcpace"), s.api.CacheBytes)
		g.Go(func() error { return pace.Run(ctx) })
	}
	return g.Wait()
}

// startupGCPercent is the GOGC of a server starting up.
const startupGCPercent = 50

// startupGC collects at startupGCPercent until the server serves (unless GOGC
// is set in the environment) and returns the function that restores the
// setting. Start-up allocates tens of MB of short-lived garbage (the managed
// fields schema alone, 22 MB to keep 0.9 MB) among the objects the server
// keeps; a smaller heap goal there leaves a smaller, less fragmented heap
// for the server's idle life.
func startupGC() func() {
	if gogcFromEnvironment() {
		return func() {}
	}
	prev := debug.SetGCPercent(startupGCPercent)
	var once sync.Once
	return func() { once.Do(func() { debug.SetGCPercent(prev) }) }
}

// gogcFromEnvironment says whether the operator set GOGC: then the server
// leaves the collector's pacing alone (start-up and gcpace).
func gogcFromEnvironment() bool {
	_, set := os.LookupEnv("GOGC")
	return set
}

// Port is the port the API server listens on, once it does.
func (s *Server) Port() int { return int(s.port.Load()) }

// Ready reports whether the API server serves.
func (s *Server) Ready() bool { return s.ready.Load() }

// LocalConfig is a client configuration for the server's own components:
// client-go through an in-process transport, authenticated as admin.
func (s *Server) LocalConfig() *rest.Config {
	admin := &apiserver.User{Name: "system:orch-server", Groups: []string{"system:masters"}}
	return &rest.Config{
		Host: "http://orch-server.local",
		QPS:  -1,
		Transport: &inproc.Transport{Handler: s.api, Prepare: func(ctx context.Context) context.Context {
			return apiserver.WithUser(ctx, admin)
		}},
	}
}

// kubeconfigHost is the address the admin kubeconfig points at: loopback,
// unless the server listens on one specific address only (--bind-address).
func kubeconfigHost(bind netip.Addr) string {
	if bind.IsValid() && !bind.IsUnspecified() {
		return bind.String()
	}
	return "127.0.0.1"
}

// bindSANs puts a specific --bind-address into the serving certificate.
func bindSANs(bind netip.Addr) []string {
	if bind.IsValid() && !bind.IsUnspecified() && !bind.IsLoopback() {
		return []string{bind.String()}
	}
	return nil
}

func bindHost(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func versionInfo(v string) version.Info {
	return version.Info{
		Major: "1", Minor: "37", GitVersion: "v1.37.2+orch-" + v, GitCommit: v, GitTreeState: "clean",
		GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
}
