// Package dns runs CoreDNS inside the orch process on every node: the cluster
// records plugin (package cluster, fed by client-go reflectors over orch's
// kube client), forwarding to the node's upstream resolvers, a cache for
// upstream answers, forwarding-loop detection, errors and health, plus the
// stanzas users add through the kube-system/coredns-custom ConfigMap
// (reloaded on change). It listens on the cluster DNS address held by a
// local dummy interface.
//
// Only CoreDNS's core/dnsserver and a handful of plugins are linked; see
// plugins.go for how CoreDNS's process-wide state is set once.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/coredns/caddy"
	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/dns/cluster"
	"github.com/orch-dev/orch/dns/internal/hook"
	"github.com/orch-dev/orch/dns/loopguard"
	"github.com/orch-dev/orch/internal/kube"
)

// Config configures a Server. Zero fields take the defaults in the comments.
type Config struct {
	// Domain is the cluster domain ("cluster.local").
	Domain string
	// Addrs are the cluster DNS addresses served (10.43.0.10).
	Addrs []netip.Addr
	// Port is the DNS port (53).
	Port int
	// Interface is the dummy link that holds Addrs ("orch-dns"); it is created
	// if missing and removed (or its added addresses are) when Run returns.
	// "-" leaves interfaces alone: Addrs must already be local.
	Interface string
	// NetNS is the path of the network namespace that holds the interface
	// and the listening sockets; "" (the node's case) is the process's own.
	// Queries CoreDNS sends upstream leave from the process's namespace
	// whatever NetNS says: goroutines are not tied to a namespace.
	NetNS string
	// ResolvConf lists the upstream resolvers ("/etc/resolv.conf"). With no
	// usable nameserver, only cluster and node names are answered.
	ResolvConf string
	// HealthAddr, if set, serves CoreDNS's /health on that address.
	HealthAddr string
	// CacheTTL caps the TTL of cached upstream answers in seconds (30).
	CacheTTL int
	// CustomNamespace and CustomName locate the ConfigMap of user stanzas
	// ("kube-system", "coredns-custom").
	CustomNamespace, CustomName string
	// SyncTimeout bounds how long Run waits for the first informer sync
	// before it starts answering (5s).
	SyncTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Domain == "" {
		c.Domain = "cluster.local"
	}
	if len(c.Addrs) == 0 {
		c.Addrs = []netip.Addr{netip.MustParseAddr("10.43.0.10")}
	}
	if c.Port == 0 {
		c.Port = 53
	}
	if c.Interface == "" {
		c.Interface = "orch-dns"
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 30
	}
	if c.CustomNamespace == "" {
		c.CustomNamespace = "kube-system"
	}
	if c.CustomName == "" {
		c.CustomName = "coredns-custom"
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = 5 * time.Second
	}
}

// Server is the node's DNS server.
type Server struct {
	cfg    Config
	client kube.Interface
	log    *slog.Logger
	index  *cluster.Index

	mu   sync.Mutex
	inst *caddy.Instance // running instance, nil when stopped
	body string          // its Corefile
}

// New returns a Server answering from the cluster client reads.
func New(cfg Config, client kube.Interface, log *slog.Logger) (*Server, error) {
	cfg.defaults()
	if _, ok := mdns.IsDomainName(cfg.Domain); !ok {
		return nil, fmt.Errorf("dns: bad cluster domain %q", cfg.Domain)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("dns: bad port %d", cfg.Port)
	}
	for i, a := range cfg.Addrs {
		if !a.IsValid() {
			return nil, fmt.Errorf("dns: invalid address at index %d", i)
		}
		cfg.Addrs[i] = a.Unmap()
	}
	if client == nil || log == nil {
		return nil, errors.New("dns: client and logger are required")
	}
	if err := setupOnce(); err != nil {
		return nil, fmt.Errorf("dns: configure coredns: %w", err)
	}
	return &Server{cfg: cfg, client: client, log: log, index: cluster.NewIndex()}, nil
}

// Index returns the cluster record index (for inspection and tests).
func (s *Server) Index() *cluster.Index { return s.index }

// Corefile returns the Corefile of the running instance.
func (s *Server) Corefile() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body
}

// Run serves until ctx ends or a forwarding loop is detected (an error
// wrapping loopguard.ErrLoop). Everything it created is removed on return.
func (s *Server) Run(ctx context.Context) (err error) {
	coreLog.Store(s.log)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	if s.cfg.Interface != "-" {
		d, err := ensureDummy(s.cfg.NetNS, s.cfg.Interface, s.cfg.Addrs)
		if err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		if d.fallback {
			s.log.Warn("dns: kernel has no dummy interfaces, the cluster DNS addresses are on lo", "addrs", s.cfg.Addrs)
		}
		defer func() {
			if rerr := d.remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("dns: %w", rerr))
			}
		}()
	}

	clusterID, unregCluster := hook.Register(s.index)
	defer unregCluster()
	guard := &loopguard.Guard{OnLoop: func(e error) { cancel(e) }, Exchange: func(m *mdns.Msg, addr string) (*mdns.Msg, error) {
		var r *mdns.Msg
		err := inNetNS(s.cfg.NetNS, func() error {
			c := &mdns.Client{Timeout: 2 * time.Second}
			var err error
			r, _, err = c.Exchange(m, addr)
			return err
		})
		return r, err
	}}
	loopID, unregLoop := hook.Register(guard)
	defer unregLoop()

	var wg sync.WaitGroup
	defer wg.Wait()
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feedErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		feedErr <- cluster.NewFeed(s.client, s.index, s.log).Run(feedCtx)
	}()

	custom := make(chan map[string]string, 1)
	cm := newCustomWatch(s.client, s.cfg.CustomNamespace, s.cfg.CustomName, custom)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cm.reflector.RunWithContext(feedCtx)
	}()

	// Answer complete data from the start when the API is reachable, but do
	// not hold the node's DNS hostage to it.
	syncCtx, syncDone := context.WithTimeout(ctx, s.cfg.SyncTimeout)
	for !s.index.Synced() || !cm.synced() {
		select {
		case <-syncCtx.Done():
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	syncDone()
	if !s.index.Synced() {
		s.log.Warn("dns: serving before the cluster records synced", "waited", s.cfg.SyncTimeout)
	}
	data := map[string]string{}
	select {
	case data = <-custom:
	default:
	}

	params := corefileParams{Domain: s.cfg.Domain, Addrs: s.cfg.Addrs, Port: s.cfg.Port, ClusterID: clusterID, LoopID: loopID,
		HealthAddr: s.cfg.HealthAddr, CacheTTL: s.cfg.CacheTTL}
	ups, err := upstreams(s.cfg.ResolvConf, s.cfg.Addrs)
	if err != nil {
		s.log.Warn("dns: no upstream resolvers, only cluster names resolve", "err", err)
	} else if len(ups) == 0 {
		s.log.Warn("dns: no upstream resolvers in resolv.conf, only cluster names resolve", "path", s.cfg.ResolvConf)
	}
	params.Upstreams = ups
	if err := s.start(params, data); err != nil {
		s.log.Error("dns: custom stanzas rejected, starting without them", "err", err)
		if err := s.start(params, nil); err != nil {
			return err
		}
	}
	defer s.stop()
	s.log.Info("dns: serving", "addrs", s.cfg.Addrs, "port", s.cfg.Port, "domain", s.cfg.Domain, "upstreams", ups)

	for {
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return nil
		case err := <-feedErr:
			if err != nil {
				return err
			}
			feedErr = nil
		case data := <-custom:
			if err := s.reload(params, data); err != nil {
				s.log.Error("dns: coredns-custom rejected, keeping the running configuration", "err", err)
			}
		}
	}
}

// start builds and starts the first instance.
func (s *Server) start(p corefileParams, custom map[string]string) error {
	p.Custom = custom
	body, err := corefile(p)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	var inst *caddy.Instance
	err = inNetNS(s.cfg.NetNS, func() error {
		var err error
		inst, err = caddy.Start(caddy.CaddyfileInput{Contents: []byte(body), Filepath: "Corefile", ServerTypeName: "dns"})
		return err
	})
	if err != nil {
		if inst != nil {
			stopInstance(inst)
		}
		return fmt.Errorf("dns: start coredns: %w", err)
	}
	s.mu.Lock()
	s.inst, s.body = inst, body
	s.mu.Unlock()
	return nil
}

// reload replaces the running instance's configuration; on error the old one
// keeps serving.
func (s *Server) reload(p corefileParams, custom map[string]string) error {
	p.Custom = custom
	body, err := corefile(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if body == s.body {
		return nil
	}
	var next *caddy.Instance
	err = inNetNS(s.cfg.NetNS, func() error {
		var err error
		next, err = s.inst.Restart(caddy.CaddyfileInput{Contents: []byte(body), Filepath: "Corefile", ServerTypeName: "dns"})
		return err
	})
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	s.inst, s.body = next, body
	s.log.Info("dns: configuration reloaded", "custom_keys", len(custom))
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	inst := s.inst
	s.inst = nil
	s.mu.Unlock()
	if inst != nil {
		if err := stopInstance(inst); err != nil {
			s.log.Warn("dns: stop coredns", "err", err)
		}
	}
}

func stopInstance(inst *caddy.Instance) error {
	errs := inst.ShutdownCallbacks()
	if err := inst.Stop(); err != nil {
		errs = append(errs, err)
	}
	inst.Wait()
	return errors.Join(errs...)
}

// customWatch follows the coredns-custom ConfigMap with a reflector (no
// informer cache) and sends each new Data on out, dropping any unread one.
type customWatch struct {
	reflector *cache.Reflector
	out       chan map[string]string
	mu        sync.Mutex
	listed    bool
}

func newCustomWatch(client kube.Interface, ns, name string, out chan map[string]string) *customWatch {
	w := &customWatch{out: out}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	cms := client.CoreV1().ConfigMaps(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return cms.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return cms.Watch(ctx, o)
		},
	}
	w.reflector = cache.NewReflectorWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), &corev1.ConfigMap{}, w,
		cache.ReflectorOptions{Name: "dns-coredns-custom"})
	return w
}

func (w *customWatch) synced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.listed
}

func (w *customWatch) push(data map[string]string) {
	if data == nil {
		data = map[string]string{}
	}
	select {
	case <-w.out:
	default:
	}
	w.out <- data
}

func (w *customWatch) Add(obj any) error {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return fmt.Errorf("dns: unexpected %T in coredns-custom watch", obj)
	}
	w.push(cm.Data)
	return nil
}

func (w *customWatch) Update(obj any) error { return w.Add(obj) }
func (w *customWatch) Delete(any) error     { w.push(nil); return nil }
func (w *customWatch) Resync() error        { return nil }

func (w *customWatch) Replace(list []any, _ string) error {
	var data map[string]string
	for _, obj := range list {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			data = cm.Data
		}
	}
	w.push(data)
	w.mu.Lock()
	w.listed = true
	w.mu.Unlock()
	return nil
}
