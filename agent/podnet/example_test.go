package podnet_test

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/orch-dev/orch/agent/podnet"
)

// How the agent wires the pod network: Init at start, the annotations on
// its Node, SetPeers from the other Nodes on every change, Setup and
// Teardown per pod sandbox, Reconcile with the pods that still exist.
func Example() {
	ctx := context.Background()
	nw, err := podnet.New(podnet.Config{
		NodeName:    "node-1",
		ClusterCIDR: podnet.DefaultClusterCIDR,
		PodCIDR:     netip.MustParsePrefix("10.42.1.0/24"), // Node.spec.podCIDR
		NodeIP:      netip.MustParseAddr("192.168.1.10"),   // the node's InternalIP
		DataDir:     "/var/lib/orch/agent/podnet",
	}, slog.Default())
	if err != nil {
		return // bad configuration: the error says what
	}
	defer nw.Close()
	if err := nw.Init(ctx); err != nil {
		return
	}
	_ = nw.Annotations() // merge into the Node's metadata.annotations

	// For each other Node (informer event): spec.podCIDR + annotations.
	peer, err := podnet.PeerFromNode("node-2", "10.42.2.0/24", map[string]string{
		podnet.AnnotationNodeIP:  "192.168.1.11",
		podnet.AnnotationVTEPMAC: "0e:11:22:33:44:55",
	})
	if err == nil {
		_ = nw.SetPeers([]podnet.Peer{peer}) // all peers, every time
	}

	ip, err := nw.Setup(ctx, "pod-uid", "/run/orch/netns/pod-uid")
	_ = ip // into Pod.status.podIP; errors.Is(err, podnet.ErrExhausted) -> event
	_ = nw.Teardown(ctx, "pod-uid", "/run/orch/netns/pod-uid")
	_, _ = nw.Reconcile(ctx, []string{"uid-of-every-pod-still-on-this-node"})
}
