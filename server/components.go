package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/metadata"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/manifests"
	"github.com/orch-dev/orch/server/controller"
	"github.com/orch-dev/orch/server/controller/daemonset"
	"github.com/orch-dev/orch/server/controller/nodeipam"
	"github.com/orch-dev/orch/server/controller/nodelifecycle"
	"github.com/orch-dev/orch/server/scheduler"
)

// runComponents runs what works through the API once it serves: the
// controllers (over the in-process transport) and, unless disabled, the
// node agent.
func (s *Server) runComponents(ctx context.Context) error {
	cfg := s.LocalConfig()
	client, err := kube.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("local client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("local metadata client: %w", err)
	}
	disc, err := controller.NewDiscovery(cfg)
	if err != nil {
		return fmt.Errorf("local discovery client: %w", err)
	}
	factory := kube.NewSharedInformerFactory(client, 10*time.Hour, kube.WithTransform(dropManagedFields))
	ipam, err := nodeipam.New(nodeipam.Config{ClusterCIDR: s.cfg.ClusterCIDR}, client, factory, s.log.With("component", "nodeipam"))
	if err != nil {
		return err
	}
	sched, err := scheduler.New(scheduler.Config{Busy: s.clientsWriting}, client, factory, s.log.With("component", "scheduler"))
	if err != nil {
		return err
	}
	lifecycle, err := nodelifecycle.New(nodelifecycle.Config{}, client, factory, s.log.With("component", "nodelifecycle"))
	if err != nil {
		return err
	}
	daemons, err := daemonset.New(daemonset.Config{}, client, factory, s.log.With("component", "daemonset"))
	if err != nil {
		return err
	}
	deploy, err := manifests.New(manifests.Config{Dir: filepath.Join(s.cfg.DataDir, "server", "manifests")}, cfg, s.api.RESTMapper(), s.log.With("component", "manifests"))
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	// A component that stops because the server is stopping is no error.
	run := func(fn func() error) {
		g.Go(func() error {
			if err := fn(); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		})
	}
	run(func() error { return controller.RunAll(ctx, controller.Config{}, client, meta, disc, factory, s.log) })
	factory.Start(ctx.Done())
	run(func() error { return ipam.Run(ctx, 1) })
	run(func() error { return sched.Run(ctx) })
	run(func() error { return lifecycle.Run(ctx, 1) })
	run(func() error { return daemons.Run(ctx, 2) })
	run(func() error { return deploy.Run(ctx) })
	if !s.cfg.DisableAgent {
		run(func() error { return s.runNode(ctx) })
	}
	return g.Wait()
}

// busyClientWrites is how many clients' writes in flight make the API server
// busy for the scheduler's background reports: the agents' status updates
// and lease renewals come a few at a time, a burst of creates by the dozen.
const busyClientWrites = 4

// clientsWriting says whether clients are writing to the API in numbers.
func (s *Server) clientsWriting() bool { return s.api.ClientWrites() >= busyClientWrites }

// dropManagedFields keeps the informer caches lean: no controller reads
// managed fields.
func dropManagedFields(obj interface{}) (interface{}, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
