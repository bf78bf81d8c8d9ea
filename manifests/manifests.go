// Package manifests applies the drop-in manifest directory
// (<data-dir>/server/manifests) to the cluster: every .yaml, .yml and .json
// file under it, subdirectories included, is applied with server-side apply
// (field manager "orch-deploy", forced) at start, whenever a file changes
// (inotify) and on a periodic resync. A file is only re-applied when its
// content changes; "<file>.skip" leaves a file and its objects alone.
//
// What each file applied is recorded in the cluster, in one ConfigMap per
// file in kube-system (label orch.dev/manifest=true), so that objects removed
// from a file, or whose file was removed (even while the server was down),
// are deleted. A bad document produces a Warning Event on that ConfigMap and
// a log line naming the file and document; the other documents and files
// still apply.
package manifests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/kube"
)

// FieldManager is the server-side apply field manager of drop-in manifests.
const FieldManager = "orch-deploy"

// DefaultResyncPeriod is how often every file is checked again even without
// an inotify event, and files that failed are retried.
const DefaultResyncPeriod = 5 * time.Minute

// DefaultNamespace holds the tracking ConfigMaps.
const DefaultNamespace = "kube-system"

// Config configures the controller.
type Config struct {
	// Dir is the manifests directory; it is created if missing.
	Dir string
	// ResyncPeriod is how often the directory is rescanned without inotify
	// events (DefaultResyncPeriod if zero).
	ResyncPeriod time.Duration
	// Namespace holds the tracking ConfigMaps (DefaultNamespace if empty).
	Namespace string
	// Debounce is how long to wait after a file event for more events
	// before rescanning (250ms if zero).
	Debounce time.Duration
}

// Controller applies the manifests directory. Create it with New.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	kube   kube.Interface
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

// New returns a controller that talks to the cluster through restConfig;
// mapper resolves the manifests' kinds (the API server's own, in process).
func New(cfg Config, restConfig *rest.Config, mapper meta.RESTMapper, log *slog.Logger) (*Controller, error) {
	if cfg.Dir == "" {
		return nil, errors.New("manifests: Dir is required")
	}
	if restConfig == nil {
		return nil, errors.New("manifests: a client configuration is required")
	}
	client, err := kube.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("manifests: client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("manifests: dynamic client: %w", err)
	}
	return NewWithClients(cfg, client, dyn, mapper, log)
}

// NewWithClients is New with the clients given: client for ConfigMaps and
// Events, dyn for the manifests' objects, mapper to resolve their kinds (a
// meta.ResettableRESTMapper is reset once when a kind is not found).
func NewWithClients(cfg Config, client kube.Interface, dyn dynamic.Interface, mapper meta.RESTMapper, log *slog.Logger) (*Controller, error) {
	if cfg.Dir == "" {
		return nil, errors.New("manifests: Dir is required")
	}
	if mapper == nil {
		return nil, errors.New("manifests: a REST mapper is required")
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = DefaultResyncPeriod
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 250 * time.Millisecond
	}
	return &Controller{
		cfg:    cfg,
		log:    log,
		kube:   client,
		dyn:    dyn,
		mapper: mapper,
	}, nil
}

// Run applies the directory, then again on every change and resync, until
// ctx ends. Failures to reach the API are logged and retried at the next
// event or resync; only a directory that cannot be watched stops Run.
func (c *Controller) Run(ctx context.Context) error {
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("manifests: create %s: %w", c.cfg.Dir, err)
	}
	w, err := newWatcher(c.cfg.Dir)
	if err != nil {
		return fmt.Errorf("manifests: watch %s: %w", c.cfg.Dir, err)
	}
	defer w.Close()
	go w.run()

	c.syncLogged(ctx, true)
	ticker := time.NewTicker(c.cfg.ResyncPeriod)
	defer ticker.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.errs:
			return fmt.Errorf("manifests: watch %s: %w", c.cfg.Dir, err)
		case <-w.events:
			if debounce == nil {
				debounce = time.After(c.cfg.Debounce)
			}
		case <-debounce:
			debounce = nil
			if err := w.addTree(); err != nil {
				c.log.Warn("watching manifest subdirectories", "dir", c.cfg.Dir, "err", err)
			}
			c.syncLogged(ctx, false)
		case <-ticker.C:
			if err := w.addTree(); err != nil {
				c.log.Warn("watching manifest subdirectories", "dir", c.cfg.Dir, "err", err)
			}
			c.syncLogged(ctx, true)
		}
	}
}

func (c *Controller) syncLogged(ctx context.Context, retryFailed bool) {
	if err := c.Sync(ctx, retryFailed); err != nil && ctx.Err() == nil {
		c.log.Error("applying manifests", "dir", c.cfg.Dir, "err", err)
	}
}
