package endpoints

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	core "k8s.io/client-go/testing"

	fixt "github.com/orch-dev/orch/server/controller/internal/fixture"
)

func pod(name, ip string, ready, terminating bool, ports ...corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: "uid-" + "x", Labels: map[string]string{"app": "a"}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	if terminating {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func TestResolvePort(t *testing.T) {
	p := pod("p", "10.0.0.1", true, false, corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP})
	for _, tc := range []struct {
		sp   corev1.ServicePort
		want int32
		ok   bool
	}{
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}, 8080, true},
		{corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP}, 53, true},
		{corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolTCP}, 0, false},
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP}, 0, false},
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(9000), Protocol: corev1.ProtocolTCP}, 9000, true},
		{corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}, 80, true},
	} {
		got, ok := resolvePort(p, &tc.sp)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%+v: got %d %v", tc.sp, got, ok)
		}
	}
}

func TestSyncPublishesSliceAndEndpoints(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns", UID: "svc-uid", Labels: map[string]string{"tier": "web"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "a"}, ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	objs := []runtime.Object{svc,
		pod("ready", "10.0.0.1", true, false),
		pod("notready", "10.0.0.2", false, false),
		pod("terminating", "10.0.0.3", true, true),
		pod("noip", "", true, false),
	}
	fx := fixt.New(t, objs...)
	c, err := New(Config{}, fx.Kube, fx.Informers, fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	fx.Start()
	if err := c.sync(context.Background(), "ns/svc"); err != nil {
		t.Fatal(err)
	}
	var slice *discoveryv1.EndpointSlice
	var ep *corev1.Endpoints
	for _, a := range fx.Writes() {
		if a.GetVerb() != "create" {
			t.Fatalf("unexpected %s", a.GetVerb())
		}
		switch o := a.(core.CreateAction).GetObject().(type) {
		case *discoveryv1.EndpointSlice:
			slice = o
		case *corev1.Endpoints:
			ep = o
		}
	}
	if slice == nil || ep == nil {
		t.Fatalf("slice %v endpoints %v", slice, ep)
	}
	if slice.Labels[discoveryv1.LabelServiceName] != "svc" || slice.Labels[discoveryv1.LabelManagedBy] != ManagedBy ||
		slice.Labels["tier"] != "web" || slice.Labels[headlessLabel] != "" || slice.GenerateName != "svc-" {
		t.Fatalf("slice meta %+v", slice.ObjectMeta)
	}
	if ref := metav1.GetControllerOf(slice); ref == nil || ref.UID != "svc-uid" || ref.Kind != "Service" {
		t.Fatalf("slice owner %v", ref)
	}
	got := map[string]discoveryv1.EndpointConditions{}
	for _, e := range slice.Endpoints {
		got[e.TargetRef.Name] = e.Conditions
		if *e.NodeName != "n1" {
			t.Fatalf("node name %v", e.NodeName)
		}
	}
	want := map[string][3]bool{"ready": {true, true, false}, "notready": {false, false, false}, "terminating": {false, true, true}}
	if len(got) != len(want) {
		t.Fatalf("endpoints %v", got)
	}
	for name, w := range want {
		c := got[name]
		if *c.Ready != w[0] || *c.Serving != w[1] || *c.Terminating != w[2] {
			t.Errorf("%s: ready %v serving %v terminating %v, want %v", name, *c.Ready, *c.Serving, *c.Terminating, w)
		}
	}
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 1 || ep.Subsets[0].Addresses[0].IP != "10.0.0.1" ||
		len(ep.Subsets[0].NotReadyAddresses) != 1 || ep.Subsets[0].NotReadyAddresses[0].IP != "10.0.0.2" || ep.Subsets[0].Ports[0].Port != 8080 {
		t.Fatalf("endpoints subsets %+v", ep.Subsets)
	}
	if _, ok := ep.Labels[headlessLabel]; !ok {
		t.Fatalf("endpoints labels %v", ep.Labels)
	}
}

func TestPublishNotReadyAddresses(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{PublishNotReadyAddresses: true}}
	svc.Name, svc.Namespace = "s", "ns"
	c := &Controller{cfg: Config{MaxEndpointsPerSlice: 100}}
	p := pod("nr", "10.0.0.2", false, false)
	p.Spec.NodeName = ""
	eps := c.endpointsFor(svc, []*corev1.Pod{p})
	if len(eps) != 1 || !eps[0].ready || !eps[0].serving {
		t.Fatalf("%+v", eps)
	}
	if s := subsets(svc, eps); len(s) != 1 || len(s[0].Addresses) != 1 {
		t.Fatalf("subsets %+v", s)
	}
}
