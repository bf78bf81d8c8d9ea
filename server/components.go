package server

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
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
	sched, err := scheduler.New(scheduler.Config{}, client, factory, s.log.With("component", "scheduler"))
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
	run(func() error { return s.trimMemory(ctx, 10*time.Second, 8<<20) })
	if !s.cfg.DisableAgent {
		run(func() error { return s.runNode(ctx) })
	}
	return g.Wait()
}

// dropManagedFields keeps the informer caches lean: no controller reads
// managed fields.
func dropManagedFields(obj interface{}) (interface{}, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// trimMemory hands the heap a burst of work left behind back to the OS
// once the cluster is quiet again. The Go runtime keeps the heap it grew to
// (up to the goal of its last busy cycle) and returns it gradually, so after
// creating and deleting thousands of objects the server would hold tens of
// MB it no longer uses for minutes. In an interval in which the store took
// at most quietWrites writes, after at least burstWrites writes since the
// last trim, or when the heap held exceeds twice the live heap (the most
// GOGC=100 grows it to) by more than minExcess, trimMemory collects and
// returns the free memory at once: one GC, while the server is otherwise
// idle.
func (s *Server) trimMemory(ctx context.Context, every time.Duration, minExcess uint64) error {
	const quietWrites, burstWrites = 20, 1000
	sample := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := s.store.Revision()
	var writes int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		rev := s.store.Revision()
		n := rev - last
		last = rev
		writes += n
		if n > quietWrites {
			continue
		}
		metrics.Read(sample)
		var v [4]uint64
		for i, m := range sample {
			if m.Value.Kind() == metrics.KindUint64 {
				v[i] = m.Value.Uint64()
			}
		}
		live, held := v[0], v[1]+v[2]+v[3]
		if writes < burstWrites && held <= 2*live+minExcess {
			continue
		}
		writes = 0
		debug.FreeOSMemory()
		s.log.Debug("returned the heap of a burst to the OS", "heldBytes", held, "liveBytes", live)
	}
}
