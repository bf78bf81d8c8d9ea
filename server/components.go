package server

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/orch-dev/orch/server/controller"
	"github.com/orch-dev/orch/server/controller/nodeipam"
)

// runComponents runs what works through the API once it serves: the
// controllers (over the in-process transport) and, unless disabled, the
// node agent.
func (s *Server) runComponents(ctx context.Context) error {
	cfg := s.LocalConfig()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("local client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("local metadata client: %w", err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Hour, informers.WithTransform(dropManagedFields))
	ipam, err := nodeipam.New(nodeipam.Config{ClusterCIDR: s.cfg.ClusterCIDR}, client, factory, s.log.With("component", "nodeipam"))
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return controller.RunAll(ctx, controller.Config{}, client, meta, factory, s.log)
	})
	g.Go(func() error { return ipam.Run(ctx, 1) })
	if !s.cfg.DisableAgent {
		g.Go(func() error { return s.runNode(ctx) })
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
