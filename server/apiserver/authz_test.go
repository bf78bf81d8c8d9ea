package apiserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/store"
)

// headerAuth takes the user from test headers.
type headerAuth struct{}

func (headerAuth) Authenticate(r *http.Request) (*User, bool, error) {
	name := r.Header.Get("X-Test-User")
	if name == "" {
		return nil, false, nil
	}
	return &User{Name: name, Groups: strings.Split(r.Header.Get("X-Test-Groups"), ",")}, true, nil
}

type setHeaders struct {
	rt   http.RoundTripper
	user string
	grp  string
}

func (s setHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-User", s.user)
	r.Header.Set("X-Test-Groups", s.grp)
	return s.rt.RoundTrip(r)
}

func TestNodeAuthorization(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "db")}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(Config{ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16")}, st, nil, headerAuth{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Bootstrap(context.Background(), netip.Addr{}, 6443); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	client := func(user, groups string) kubernetes.Interface {
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: hs.URL, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return setHeaders{rt: rt, user: user, grp: groups}
		}})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ctx := context.Background()
	admin := client("admin", GroupMasters)
	n1 := client("system:node:n1", GroupNodes)
	stranger := client("someone", "system:authenticated")

	if _, err := n1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("node creates itself: %v", err)
	}
	if _, err := n1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node creates another node: %v", err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.CoreV1().Nodes().Patch(ctx, "n2", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node patches another node: %v", err)
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: corev1.NamespaceNodeLease}}
	if _, err := n1.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("own lease: %v", err)
	}
	for _, name := range []string{"mine", "theirs"} {
		p := testPod(name)
		if name == "mine" {
			p.Spec.NodeName = "n1"
		} else {
			p.Spec.NodeName = "n2"
		}
		if _, err := admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	status := []byte(`{"status":{"phase":"Running"}}`)
	if _, err := n1.CoreV1().Pods("default").Patch(ctx, "mine", types.MergePatchType, status, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("status of own pod: %v", err)
	}
	if _, err := n1.CoreV1().Pods("default").Patch(ctx, "theirs", types.MergePatchType, status, metav1.PatchOptions{}, "status"); !apierrors.IsForbidden(err) {
		t.Fatalf("status of another node's pod: %v", err)
	}
	if err := n1.CoreV1().Namespaces().Delete(ctx, "default", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node deletes a namespace: %v", err)
	}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1"}, InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "mine"}, Reason: "Started"}
	if _, err := n1.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("node creates an event: %v", err)
	}
	if _, err := n1.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("node lists pods: %v", err)
	}
	if _, err := stranger.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a user without a role lists pods: %v", err)
	}
}
