package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/internal/kube/clientgo"
	"github.com/orch-dev/orch/internal/testimage"
	"github.com/orch-dev/orch/runtime/image"
)

// An image missing while the start-up import runs is looked up again once
// it is over, instead of being reported missing (and pulled).
func TestPreloadedResolveWaitsForStartupImport(t *testing.T) {
	store, err := image.Open(image.Config{Root: filepath.Join(t.TempDir(), "images")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	p := preloaded{Store: store, scanned: scanned}
	ctx := context.Background()

	type result struct {
		img *image.Image
		err error
	}
	got := make(chan result, 1)
	go func() {
		img, err := p.Resolve(ctx, "late:1")
		got <- result{img, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Resolve answered before the start-up import ended: %v %v", r.img, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	layer, err := testimage.Layer([]testimage.Entry{testimage.File("hello", "hi")}, testimage.None)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Image(testimage.Platform(), testimage.BusyboxConfig(), layer)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := testimage.WriteDockerSave(&archive, testimage.None, testimage.Tagged{Image: img, Tags: []string{"late:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(ctx, &archive); err != nil {
		t.Fatal(err)
	}
	close(scanned)
	if r := <-got; r.err != nil || r.img == nil {
		t.Fatalf("after the import: %v %v", r.img, r.err)
	}
	// Once the import is over, a missing image is missing at once.
	if _, err := p.Resolve(ctx, "never:1"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("missing image after the scan: %v", err)
	}
	// A caller that gives up is not held.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p2 := preloaded{Store: store, scanned: make(chan struct{})}
	if _, err := p2.Resolve(cctx, "never:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Resolve: %v", err)
	}
}

// Before the Node is registered the lease loop gets errNoLeaseOwner (and
// retries soon, quietly); once it exists the Lease is created owned by it.
func TestLeaseWaitsForItsNode(t *testing.T) {
	cs := fake.NewClientset()
	a := &Agent{cfg: Config{NodeName: "n1", LeaseDuration: 40 * time.Second}, client: clientgo.Wrap(cs)}
	leases := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	ctx := context.Background()
	if _, err := a.renewLease(ctx, leases, nil); !errors.Is(err, errNoLeaseOwner) {
		t.Fatalf("without a Node: %v", err)
	}
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.renewLease(ctx, leases, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != node.UID || *l.Spec.LeaseDurationSeconds != 40 {
		t.Errorf("lease %+v", l)
	}
}
