// Package kube is orch's typed Kubernetes client: a clientset, shared
// informers and an event sink for the API groups orch's own components use
// (core/v1, apps/v1, coordination/v1, discovery/v1), built on client-go's
// REST client, generic typed client (gentype), informers and listers.
//
// It exists for memory. client-go's own clientset, its informer factory and
// every typed client import k8s.io/client-go/kubernetes/scheme, which links
// and registers all ~50 built-in API group versions (admission, flow control,
// storage, resource, RBAC, ...) with their generated code and documentation
// tables: about 10 MB of RSS in every orch process, for types orch never
// sends or receives. `make lint` checks that no orch binary links that scheme.
//
// The typed interfaces are method subsets with client-go's exact signatures,
// so a client-go clientset (kube/clientgo wraps one, for tests with
// client-go's fake) satisfies them too.
package kube

import (
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// codecs are the scheme and its codecs, built once on first use.
type codecs struct {
	scheme *runtime.Scheme
	codecs serializer.CodecFactory
	params runtime.ParameterCodec
	err    error // from registering the types; the clientset reports it
}

var sharedCodecs = sync.OnceValue(func() codecs {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	var err error
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, coordinationv1.AddToScheme, discoveryv1.AddToScheme,
	} {
		if e := add(s); e != nil && err == nil {
			err = fmt.Errorf("registering API types: %w", e)
		}
	}
	return codecs{scheme: s, codecs: serializer.NewCodecFactory(s), params: runtime.NewParameterCodec(s), err: err}
})

// Scheme is the scheme of the clientset's types (for event recorders and
// object references). Callers must not change it.
func Scheme() *runtime.Scheme { return sharedCodecs().scheme }
