package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/agent/podnet"
	"github.com/orch-dev/orch/internal/kube"
)

// PeerNetwork is a Network that connects this node to the others: the
// agent publishes NodeAnnotations on its Node and hands it every Node
// when they change.
type PeerNetwork interface {
	Network
	NodeAnnotations() map[string]string
	SetNodes(nodes []*corev1.Node) error
}

// podnetNetwork adapts *podnet.Network to PeerNetwork.
type podnetNetwork struct {
	n   *podnet.Network
	log *slog.Logger
}

// PodnetFactory makes the node's podnet network (routed veths, VXLAN)
// once the pod CIDR is known; base carries everything but PodCIDR.
func PodnetFactory(base podnet.Config, log *slog.Logger) NetworkFactory {
	return func(ctx context.Context, podCIDR netip.Prefix) (Network, error) {
		cfg := base
		cfg.PodCIDR = podCIDR
		n, err := podnet.New(cfg, log.With("component", "podnet"))
		if err != nil {
			return nil, err
		}
		if err := n.Init(ctx); err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("pod network init: %w", err)
		}
		return &podnetNetwork{n: n, log: log}, nil
	}
}

func (p *podnetNetwork) Setup(ctx context.Context, podUID, netnsPath string) ([]netip.Addr, error) {
	ip, err := p.n.Setup(ctx, podUID, netnsPath)
	if err != nil {
		return nil, err
	}
	return []netip.Addr{ip.Addr.Addr()}, nil
}

func (p *podnetNetwork) Teardown(ctx context.Context, podUID, netnsPath string) error {
	return p.n.Teardown(ctx, podUID, netnsPath)
}

func (p *podnetNetwork) NodeAnnotations() map[string]string { return p.n.Annotations() }

func (p *podnetNetwork) SetNodes(nodes []*corev1.Node) error {
	peers := make([]podnet.Peer, 0, len(nodes))
	for _, n := range nodes {
		if n.Spec.PodCIDR == "" {
			continue
		}
		peer, err := podnet.PeerFromNode(n.Name, n.Spec.PodCIDR, n.Annotations)
		if err != nil {
			p.log.Debug("node not routable yet", "node", n.Name, "err", err)
			continue
		}
		peers = append(peers, peer)
	}
	return p.n.SetPeers(peers)
}

// runPeers publishes the network's annotations on this Node and feeds it
// every Node while ctx lasts.
func (a *Agent) runPeers(ctx context.Context, pn PeerNetwork) {
	f := kube.NewSharedInformerFactory(a.client, 0)
	inf := f.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke,
	}); err != nil {
		a.log.Error("node informer", "err", err)
		return
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return
	}
	want := pn.NodeAnnotations()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		nodes, err := inf.Lister().List(labels.Everything())
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if n.Name != a.cfg.NodeName {
				continue
			}
			missing := false
			for k, v := range want {
				if n.Annotations[k] != v {
					missing = true
				}
			}
			if missing {
				b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": want}})
				if err == nil {
					_, err = a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, b, metav1.PatchOptions{})
				}
				if err != nil && ctx.Err() == nil {
					a.log.Warn("publish network annotations", "err", err)
					time.AfterFunc(2*time.Second, func() { poke(nil) })
				}
			}
		}
		slices.SortFunc(nodes, func(x, y *corev1.Node) int { return strings.Compare(x.Name, y.Name) })
		if err := pn.SetNodes(nodes); err != nil {
			a.log.Warn("pod network peers", "err", err)
		}
	}
}
