// Package clientgo makes a client-go clientset a kube.Interface, so that
// tests can drive orch's components with client-go's fake clientset (its
// object tracker, reactors and recorded actions). Only tests import it:
// linking it into orch would bring back the scheme of every API group that
// package kube exists to leave out (`make lint` checks).
package clientgo

import (
	"k8s.io/client-go/kubernetes"

	"github.com/orch-dev/orch/internal/kube"
)

// Wrap returns cs as a kube.Interface.
func Wrap(cs kubernetes.Interface) kube.Interface { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (c clientset) CoreV1() kube.CoreV1Interface { return coreV1(c) }
func (c clientset) AppsV1() kube.AppsV1Interface { return appsV1(c) }
func (c clientset) CoordinationV1() kube.CoordinationV1Interface {
	return coordinationV1(c)
}
func (c clientset) DiscoveryV1() kube.DiscoveryV1Interface { return discoveryV1(c) }

// IsWatchListSemanticsUnSupported passes on the wrapped clientset's answer
// (client-go's fake has no watch-list; informers then list and watch).
func (c clientset) IsWatchListSemanticsUnSupported() bool {
	u, ok := c.cs.(interface{ IsWatchListSemanticsUnSupported() bool })
	return ok && u.IsWatchListSemanticsUnSupported()
}

type coreV1 struct{ cs kubernetes.Interface }

func (g coreV1) Pods(ns string) kube.PodInterface         { return g.cs.CoreV1().Pods(ns) }
func (g coreV1) Nodes() kube.NodeInterface                { return g.cs.CoreV1().Nodes() }
func (g coreV1) Namespaces() kube.NamespaceInterface      { return g.cs.CoreV1().Namespaces() }
func (g coreV1) Services(ns string) kube.ServiceInterface { return g.cs.CoreV1().Services(ns) }
func (g coreV1) Endpoints(ns string) kube.EndpointsInterface {
	return g.cs.CoreV1().Endpoints(ns)
}
func (g coreV1) ConfigMaps(ns string) kube.ConfigMapInterface { return g.cs.CoreV1().ConfigMaps(ns) }
func (g coreV1) Secrets(ns string) kube.SecretInterface       { return g.cs.CoreV1().Secrets(ns) }
func (g coreV1) ServiceAccounts(ns string) kube.ServiceAccountInterface {
	return g.cs.CoreV1().ServiceAccounts(ns)
}
func (g coreV1) Events(ns string) kube.EventInterface { return g.cs.CoreV1().Events(ns) }

type appsV1 struct{ cs kubernetes.Interface }

func (g appsV1) Deployments(ns string) kube.DeploymentInterface { return g.cs.AppsV1().Deployments(ns) }
func (g appsV1) ReplicaSets(ns string) kube.ReplicaSetInterface { return g.cs.AppsV1().ReplicaSets(ns) }
func (g appsV1) DaemonSets(ns string) kube.DaemonSetInterface   { return g.cs.AppsV1().DaemonSets(ns) }
func (g appsV1) ControllerRevisions(ns string) kube.ControllerRevisionInterface {
	return g.cs.AppsV1().ControllerRevisions(ns)
}

type coordinationV1 struct{ cs kubernetes.Interface }

func (g coordinationV1) Leases(ns string) kube.LeaseInterface {
	return g.cs.CoordinationV1().Leases(ns)
}

type discoveryV1 struct{ cs kubernetes.Interface }

func (g discoveryV1) EndpointSlices(ns string) kube.EndpointSliceInterface {
	return g.cs.DiscoveryV1().EndpointSlices(ns)
}
