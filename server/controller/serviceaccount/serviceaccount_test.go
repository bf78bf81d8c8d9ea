package serviceaccount

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	core "k8s.io/client-go/testing"

	fixt "github.com/orch-dev/orch/server/controller/internal/fixture"
)

func TestEnsuresDefaultAccount(t *testing.T) {
	active := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	terminating := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
	has := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "h"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "h"}}
	fx := fixt.New(t, active, terminating, has, sa)
	c, err := New(Config{}, fx.Kube, fx.Informers, fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	fx.Start()
	for _, ns := range []string{"a", "t", "h", "missing"} {
		if err := c.sync(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
	w := fx.Writes()
	if len(w) != 1 || w[0].GetVerb() != "create" || w[0].GetNamespace() != "a" ||
		w[0].(core.CreateAction).GetObject().(*corev1.ServiceAccount).Name != "default" {
		t.Fatalf("actions %v", w)
	}
}
