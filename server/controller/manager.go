// Package controller runs orch's control loops — ReplicaSet, Deployment,
// garbage collector, namespace, ServiceAccount, Endpoints/EndpointSlices
// and ServiceLB — against the API through client-go informers and
// rate-limited work queues. The server's composition root builds one
// Manager with one shared informer factory and runs it.
package controller

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/deployment"
	"github.com/orch-dev/orch/server/controller/endpoints"
	"github.com/orch-dev/orch/server/controller/garbagecollector"
	"github.com/orch-dev/orch/server/controller/internal/discover"
	"github.com/orch-dev/orch/server/controller/internal/kit"
	"github.com/orch-dev/orch/server/controller/namespace"
	"github.com/orch-dev/orch/server/controller/replicaset"
	"github.com/orch-dev/orch/server/controller/serviceaccount"
	"github.com/orch-dev/orch/server/controller/servicelb"
)

// Config selects and sizes the controllers; the zero value runs all of
// them with upstream's default worker counts.
type Config struct {
	// Disabled names controllers not to run ("replicaset", "deployment",
	// "garbagecollector", "namespace", "serviceaccount", "endpoints",
	// "servicelb").
	Disabled []string
	// Workers overrides the worker count of every controller when > 0.
	Workers int
	// Deployment, ReplicaSet, ... configure single controllers (their
	// Recorder fields are filled by the Manager when nil).
	ReplicaSet       replicaset.Config
	Deployment       deployment.Config
	GarbageCollector garbagecollector.Config
	Namespace        namespace.Config
	ServiceAccount   serviceaccount.Config
	Endpoints        endpoints.Config
	ServiceLB        servicelb.Config
}

// runner is a controller: Run(ctx, workers).
type runner interface {
	Run(ctx context.Context, workers int) error
}

type entry struct {
	name    string
	workers int
	r       runner
}

// Manager owns the controllers and their shared event recorder.
type Manager struct {
	informers *kube.SharedInformerFactory
	events    *kit.Events
	list      []entry
	log       *slog.Logger
}

// Discovery reads the API's discovery documents (client-go's
// discovery.DiscoveryInterface, its fake included, is one).
type Discovery = discover.Source

// NewDiscovery returns a Discovery reading the documents of the server of
// c over HTTP.
func NewDiscovery(c *rest.Config) (Discovery, error) {
	d, err := discover.NewForConfig(c)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// New builds every enabled controller on the shared informer factory f;
// meta (metadata client) and disc (discovery) serve the garbage collector
// and the namespace controller.
func New(cfg Config, client kube.Interface, meta metadata.Interface, disc Discovery, f *kube.SharedInformerFactory, log *slog.Logger) (*Manager, error) {
	m := &Manager{informers: f, events: kit.NewEvents(client, "orch-controller-manager"), log: log.With("component", "controller-manager")}
	off := map[string]bool{}
	for _, d := range cfg.Disabled {
		off[d] = true
	}
	w := func(def int) int {
		if cfg.Workers > 0 {
			return cfg.Workers
		}
		return def
	}
	rec := m.events.Recorder
	add := func(name string, workers int, mk func() (runner, error)) error {
		if off[name] {
			return nil
		}
		r, err := mk()
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		m.list = append(m.list, entry{name: name, workers: workers, r: r})
		return nil
	}
	if cfg.ReplicaSet.Recorder == nil {
		cfg.ReplicaSet.Recorder = rec
	}
	if cfg.Deployment.Recorder == nil {
		cfg.Deployment.Recorder = rec
	}
	steps := []struct {
		name    string
		workers int
		mk      func() (runner, error)
	}{
		{"replicaset", w(5), func() (runner, error) { return replicaset.New(cfg.ReplicaSet, client, f, log) }},
		{"deployment", w(5), func() (runner, error) { return deployment.New(cfg.Deployment, client, f, log) }},
		{"garbagecollector", w(5), func() (runner, error) {
			return garbagecollector.New(cfg.GarbageCollector, client, meta, disc, f, log)
		}},
		{"namespace", w(2), func() (runner, error) { return namespace.New(cfg.Namespace, client, meta, disc, f, log) }},
		{"serviceaccount", w(1), func() (runner, error) { return serviceaccount.New(cfg.ServiceAccount, client, f, log) }},
		{"endpoints", w(5), func() (runner, error) { return endpoints.New(cfg.Endpoints, client, f, log) }},
		{"servicelb", w(1), func() (runner, error) { return servicelb.New(cfg.ServiceLB, client, f, log) }},
	}
	for _, s := range steps {
		if err := add(s.name, s.workers, s.mk); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run starts the shared informers, the event sink and every controller;
// it returns when ctx ends (nil) or a controller fails.
func (m *Manager) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { m.events.Run(ctx); return nil })
	for _, e := range m.list {
		g.Go(func() error {
			if err := e.r.Run(ctx, e.workers); err != nil && ctx.Err() == nil {
				return fmt.Errorf("controller %s: %w", e.name, err)
			}
			return nil
		})
	}
	m.informers.Start(ctx.Done())
	m.log.Info("controllers started", "count", len(m.list))
	// The factory belongs to the caller (it may be shared further): it is
	// started here but not shut down.
	return g.Wait()
}

// RunAll builds and runs every controller until ctx ends.
func RunAll(ctx context.Context, cfg Config, client kube.Interface, meta metadata.Interface, disc Discovery, f *kube.SharedInformerFactory, log *slog.Logger) error {
	m, err := New(cfg, client, meta, disc, f, log)
	if err != nil {
		return err
	}
	return m.Run(ctx)
}
