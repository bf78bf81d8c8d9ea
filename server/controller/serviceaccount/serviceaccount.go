// Package serviceaccount ensures every active namespace has a "default"
// ServiceAccount, as upstream's serviceaccounts-controller does.
package serviceaccount

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// Names of the accounts every namespace gets (["default"]).
	Names []string
}

// Controller is the ServiceAccount controller.
type Controller struct {
	cfg      Config
	client   kube.Interface
	nsLister corelisters.NamespaceLister
	saLister corelisters.ServiceAccountLister
	synced   []cache.InformerSynced
	queue    kit.Queue
	log      *slog.Logger
}

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if len(cfg.Names) == 0 {
		cfg.Names = []string{"default"}
	}
	nsInf, saInf := f.Core().V1().Namespaces(), f.Core().V1().ServiceAccounts()
	c := &Controller{cfg: cfg, client: client, nsLister: nsInf.Lister(), saLister: saInf.Lister(),
		synced: []cache.InformerSynced{nsInf.Informer().HasSynced, saInf.Informer().HasSynced},
		queue:  kit.NewQueue("serviceaccount"), log: log.With("controller", "serviceaccount")}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueNS,
		UpdateFunc: func(_, n any) { c.enqueueNS(n) },
	}); err != nil {
		return nil, fmt.Errorf("serviceaccount: namespace handler: %w", err)
	}
	if _, err := saInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(o any) {
			if sa, ok := kit.Tombstone(o).(*corev1.ServiceAccount); ok {
				c.queue.Add(sa.Namespace)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("serviceaccount: handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueNS(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		c.queue.Add(ns.Name)
	}
}

// Run keeps the accounts with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "serviceaccount", c.queue, c.synced, nil, workers, c.sync, c.log)
}

func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.nsLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase == corev1.NamespaceTerminating || ns.DeletionTimestamp != nil {
		return nil
	}
	for _, sa := range c.cfg.Names {
		if _, err := c.saLister.ServiceAccounts(name).Get(sa); err == nil {
			continue
		}
		_, err := c.client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		switch {
		case err == nil:
			c.log.Info("created service account", "namespace", name, "name", sa)
		case apierrors.IsAlreadyExists(err), kit.NamespaceTerminating(err):
		default:
			return fmt.Errorf("create service account %s/%s: %w", name, sa, err)
		}
	}
	return nil
}
