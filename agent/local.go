package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/orch-dev/orch/runtime"
	"github.com/orch-dev/orch/runtime/image"
)

// LocalConfig locates this machine's runtime and image store.
type LocalConfig struct {
	// DataDir is orch's data directory; the runtime keeps its state in
	// <DataDir>/agent, images in <DataDir>/agent/image-store and drop-in
	// archives are imported from <DataDir>/agent/images.
	DataDir string
	// CgroupRoot is the cgroup parent of the pods (default /orch).
	CgroupRoot string
	// LogDir holds container logs (default /var/log/pods).
	LogDir string
	// RegistriesFile is the registries.yaml (default /etc/orch/registries.yaml).
	RegistriesFile string
}

// Local is the machine side of a node: the container runtime (with what
// an earlier orch left running re-adopted) and the image store with its
// drop-in directory watcher.
type Local struct {
	Runtime *runtime.Runtime
	Images  *image.Store
	watcher *image.Watcher
}

// OpenLocal opens the runtime and image store under cfg.DataDir.
func OpenLocal(cfg LocalConfig, log *slog.Logger) (*Local, error) {
	if cfg.RegistriesFile == "" {
		cfg.RegistriesFile = image.DefaultRegistriesFile
	}
	rt, err := runtime.New(runtime.Config{StateDir: filepath.Join(cfg.DataDir, "agent"), LogDir: cfg.LogDir, CgroupRoot: cfg.CgroupRoot}, log.With("component", "runtime"))
	if err != nil {
		return nil, err
	}
	if err := rt.Recover(); err != nil {
		return nil, fmt.Errorf("runtime: recover: %w", err)
	}
	store, err := image.Open(image.Config{Root: image.DefaultRoot(cfg.DataDir), RegistriesFile: cfg.RegistriesFile}, log.With("component", "images"))
	if err != nil {
		return nil, err
	}
	w, err := image.NewWatcher(image.WatcherConfig{Dir: image.DefaultImportDir(cfg.DataDir),
		StateFile: filepath.Join(store.Root(), "imported.json")}, store, log.With("component", "image-import"))
	if err != nil {
		return nil, err
	}
	return &Local{Runtime: rt, Images: store, watcher: w}, nil
}

// Deps returns the agent's dependencies on this machine. Its image store
// reports an image missing only once the archives in the drop-in directory
// at start are imported (Run does that first), so a pod created while they
// are being imported does not go to a registry for them.
func (l *Local) Deps(network NetworkFactory) Deps {
	return Deps{Runtime: l.Runtime, Images: preloaded{Store: l.Images, scanned: l.watcher.Scanned()}, Network: network}
}

// preloaded is the image store behind the start-up import.
type preloaded struct {
	*image.Store
	scanned <-chan struct{}
}

// Resolve waits for the start-up import before it reports ref missing.
func (p preloaded) Resolve(ctx context.Context, ref string) (*image.Image, error) {
	img, err := p.Store.Resolve(ctx, ref)
	if !errors.Is(err, image.ErrNotFound) {
		return img, err
	}
	select {
	case <-p.scanned:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.Store.Resolve(ctx, ref)
}

// Run imports drop-in image archives until ctx ends.
func (l *Local) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.watcher.Run(ctx) })
	return g.Wait()
}
