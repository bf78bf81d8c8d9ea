package controller_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller"
)

// cluster is a real API server with every controller running.
type cluster struct {
	*apitest.Server
	ctx context.Context
}

func testLogger() *slog.Logger {
	if os.Getenv("ORCH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startCluster(t *testing.T) *cluster { return startClusterB(t) }

func startClusterB(t testing.TB) *cluster {
	t.Helper()
	s := apitest.Start(t)
	meta, err := metadata.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := controller.NewDiscovery(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	f := kube.NewSharedInformerFactory(s.Kube, 0)
	m, err := controller.New(controller.Config{}, s.Kube, meta, disc, f, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		f.Shutdown()
	})
	return &cluster{Server: s, ctx: ctx}
}

// kubelet plays the node agent for the pods of ns: every pod becomes
// Running and Ready with an address, unless hold says otherwise.
type kubelet struct {
	mu   sync.Mutex
	hold func(*corev1.Pod) bool
	next int
}

func (c *cluster) runKubelet(t *testing.T, ns string) *kubelet { return c.runKubeletB(t, ns) }

func (c *cluster) runKubeletB(t testing.TB, ns string) *kubelet {
	k := &kubelet{}
	ctx, cancel := context.WithCancel(c.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for i := range pods.Items {
					k.start(ctx, c.Client, &pods.Items[i])
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return k
}

func (k *kubelet) start(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodRunning {
		return
	}
	k.mu.Lock()
	hold := k.hold != nil && k.hold(p)
	k.next++
	n := k.next
	k.mu.Unlock()
	if hold {
		return
	}
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = fmt.Sprintf("10.42.%d.%d", n/250, n%250+1)
	p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	_, _ = cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
}

func (k *kubelet) setHold(f func(*corev1.Pod) bool) {
	k.mu.Lock()
	k.hold = f
	k.mu.Unlock()
}

func (c *cluster) namespace(t *testing.T, name string) string {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
}

func int32p(v int32) *int32 { return &v }

func newDeployment(name string, replicas int32, image string) *appsv1.Deployment {
	lbl := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: int32p(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: image,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
}

func (c *cluster) pods(t *testing.T, ns string, sel map[string]string) []corev1.Pod {
	t.Helper()
	l, err := c.Client.CoreV1().Pods(ns).List(c.ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// rolledOut is kubectl rollout status's test for a finished rollout.
func (c *cluster) rolledOut(ns, name string) func() (bool, error) {
	return func() (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := *d.Spec.Replicas
		st := d.Status
		ok := st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want
		return ok, fmt.Errorf("status %+v", st)
	}
}

func (c *cluster) replicaSets(t *testing.T, ns string) []appsv1.ReplicaSet {
	t.Helper()
	l, err := c.Client.AppsV1().ReplicaSets(ns).List(c.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestDeploymentRollout(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-roll")
	c.runKubelet(t, ns)
	d := newDeployment("web", 3, "web:1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: &intstr.IntOrString{Type: intstr.Int, IntVal: 0},
		MaxSurge:       &intstr.IntOrString{Type: intstr.Int, IntVal: 1},
	}}
	start := time.Now()
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "3 available replicas", c.rolledOut(ns, "web"))
	t.Logf("3-replica deployment available after %v", time.Since(start))

	rss := c.replicaSets(t, ns)
	if len(rss) != 1 {
		t.Fatalf("replica sets = %d, want 1", len(rss))
	}
	rs1 := rss[0]
	hash := rs1.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
	if hash == "" || rs1.Name != "web-"+hash || rs1.Spec.Selector.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
		t.Fatalf("rs %s labels %v selector %v", rs1.Name, rs1.Labels, rs1.Spec.Selector)
	}
	if rs1.Annotations["deployment.kubernetes.io/revision"] != "1" || rs1.Annotations["deployment.kubernetes.io/desired-replicas"] != "3" ||
		rs1.Annotations["deployment.kubernetes.io/max-replicas"] != "4" {
		t.Fatalf("rs annotations %v", rs1.Annotations)
	}
	pods := c.pods(t, ns, map[string]string{"app": "web"})
	if len(pods) != 3 {
		t.Fatalf("pods = %d, want 3", len(pods))
	}
	for _, p := range pods {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.UID != rs1.UID || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion || p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
			t.Fatalf("pod %s: owner %v labels %v", p.Name, ref, p.Labels)
		}
	}
	dep, _ := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if dep.Annotations["deployment.kubernetes.io/revision"] != "1" {
		t.Fatalf("deployment revision %q", dep.Annotations["deployment.kubernetes.io/revision"])
	}
	if cond := findCond(dep, appsv1.DeploymentAvailable); cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != "MinimumReplicasAvailable" {
		t.Fatalf("Available condition %+v", cond)
	}
	if cond := findCond(dep, appsv1.DeploymentProgressing); cond == nil || cond.Reason != "NewReplicaSetAvailable" {
		t.Fatalf("Progressing condition %+v", cond)
	}

	// Scale 3 -> 1 -> 3.
	for _, n := range []int32{1, 3} {
		scale, err := c.Client.AppsV1().Deployments(ns).GetScale(c.ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = n
		if _, err := c.Client.AppsV1().Deployments(ns).UpdateScale(c.ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, fmt.Sprintf("scaled to %d", n), func() (bool, error) {
			ok, err := c.rolledOut(ns, "web")()
			if !ok {
				return false, err
			}
			live := 0
			for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
				if p.DeletionTimestamp == nil {
					live++
				}
			}
			return live == int(n), fmt.Errorf("%d pods", live)
		})
	}
	if n := len(c.replicaSets(t, ns)); n != 1 {
		t.Fatalf("scaling made %d replica sets", n)
	}

	// A template change rolls with maxUnavailable 0: never fewer than 3
	// ready pods.
	watchReady := func() (stop func() int) {
		done := make(chan struct{})
		minReady := make(chan int, 1)
		go func() {
			low := 1 << 30
			for {
				select {
				case <-done:
					minReady <- low
					return
				default:
				}
				n := 0
				for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
					if ready(&p) && p.DeletionTimestamp == nil {
						n++
					}
				}
				low = min(low, n)
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return func() int { close(done); return <-minReady }
	}
	update := func(image string) time.Duration {
		t.Helper()
		cur, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Template.Spec.Containers[0].Image = image
		stop := watchReady()
		start := time.Now()
		if _, err := c.Client.AppsV1().Deployments(ns).Update(c.ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		eventually(t, 30*time.Second, "rollout of "+image, c.rolledOut(ns, "web"))
		took := time.Since(start)
		if low := stop(); low < 3 {
			t.Fatalf("ready pods fell to %d during the rollout with maxUnavailable 0", low)
		}
		return took
	}
	took := update("web:2")
	t.Logf("3-replica rolling update took %v", took)
	rss = c.replicaSets(t, ns)
	if len(rss) != 2 {
		t.Fatalf("replica sets after update = %d", len(rss))
	}
	var rs2 appsv1.ReplicaSet
	for _, rs := range rss {
		if rs.UID != rs1.UID {
			rs2 = rs
		} else if *rs.Spec.Replicas != 0 {
			t.Fatalf("old rs still has %d replicas", *rs.Spec.Replicas)
		}
	}
	if rs2.Annotations["deployment.kubernetes.io/revision"] != "2" || *rs2.Spec.Replicas != 3 {
		t.Fatalf("new rs %s revision %q replicas %d", rs2.Name, rs2.Annotations["deployment.kubernetes.io/revision"], *rs2.Spec.Replicas)
	}
	for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
		if p.Spec.Containers[0].Image != "web:2" {
			t.Fatalf("pod %s still runs %s", p.Name, p.Spec.Containers[0].Image)
		}
	}

	// Rollback by re-applying the first template re-uses the first RS and
	// bumps its revision.
	update("web:1")
	rss = c.replicaSets(t, ns)
	if len(rss) != 2 {
		t.Fatalf("replica sets after rollback = %d", len(rss))
	}
	for _, rs := range rss {
		if rs.UID == rs1.UID {
			if *rs.Spec.Replicas != 3 || rs.Annotations["deployment.kubernetes.io/revision"] != "3" {
				t.Fatalf("rolled-back rs replicas %d revision %q", *rs.Spec.Replicas, rs.Annotations["deployment.kubernetes.io/revision"])
			}
		} else if *rs.Spec.Replicas != 0 {
			t.Fatalf("rs %s still has %d replicas", rs.Name, *rs.Spec.Replicas)
		}
	}
	dep, _ = c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if dep.Annotations["deployment.kubernetes.io/revision"] != "3" {
		t.Fatalf("deployment revision %q after rollback", dep.Annotations["deployment.kubernetes.io/revision"])
	}
}

func findCond(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func TestDeploymentRecreate(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-recreate")
	c.runKubelet(t, ns)
	d := newDeployment("db", 2, "db:1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "rollout", c.rolledOut(ns, "db"))
	cur, _ := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "db", metav1.GetOptions{})
	cur.Spec.Template.Spec.Containers[0].Image = "db:2"
	done := make(chan struct{})
	mixed := make(chan string, 1)
	go func() {
		defer close(mixed)
		for {
			select {
			case <-done:
				return
			default:
			}
			images := map[string]bool{}
			for _, p := range c.pods(t, ns, map[string]string{"app": "db"}) {
				images[p.Spec.Containers[0].Image] = true
			}
			if len(images) > 1 {
				mixed <- fmt.Sprint(images)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := c.Client.AppsV1().Deployments(ns).Update(c.ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	eventually(t, 20*time.Second, "recreate rollout", c.rolledOut(ns, "db"))
	close(done)
	if m, ok := <-mixed; ok {
		t.Fatalf("old and new pods ran together: %s", m)
	}
	pods := c.pods(t, ns, map[string]string{"app": "db"})
	if len(pods) != 2 || pods[0].Spec.Containers[0].Image != "db:2" {
		t.Fatalf("pods after recreate: %d", len(pods))
	}
}

func TestDeletePropagation(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-gc")
	c.runKubelet(t, ns)
	for _, policy := range []metav1.DeletionPropagation{metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan} {
		t.Run(string(policy), func(t *testing.T) {
			name := map[metav1.DeletionPropagation]string{"Background": "bg", "Foreground": "fg", "Orphan": "or"}[policy]
			d := newDeployment(name, 2, "img:1")
			if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "rollout", c.rolledOut(ns, name))
			sel := map[string]string{"app": name}
			err := c.Client.AppsV1().Deployments(ns).Delete(c.ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy})
			if err != nil {
				t.Fatal(err)
			}
			rsOf := func() []appsv1.ReplicaSet {
				l, err := c.Client.AppsV1().ReplicaSets(ns).List(c.ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
				if err != nil {
					t.Fatal(err)
				}
				return l.Items
			}
			switch policy {
			case metav1.DeletePropagationForeground:
				// The deployment stays (finalizer) until its dependents are gone.
				sawHeld := false
				eventually(t, 20*time.Second, "foreground deletion", func() (bool, error) {
					_, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, name, metav1.GetOptions{})
					gone := apierrors.IsNotFound(err)
					if !gone {
						sawHeld = true
						return false, err
					}
					if n := len(rsOf()) + len(c.pods(t, ns, sel)); n != 0 {
						t.Fatalf("deployment deleted while %d dependents remain", n)
					}
					return true, nil
				})
				if !sawHeld {
					t.Log("deployment went before a check saw it held")
				}
			case metav1.DeletePropagationBackground:
				eventually(t, 20*time.Second, "dependents deleted", func() (bool, error) {
					n := len(rsOf()) + len(c.pods(t, ns, sel))
					return n == 0, fmt.Errorf("%d dependents", n)
				})
			case metav1.DeletePropagationOrphan:
				eventually(t, 20*time.Second, "owner deleted", func() (bool, error) {
					_, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, name, metav1.GetOptions{})
					return apierrors.IsNotFound(err), err
				})
				// Give the collector time to (wrongly) act before checking.
				time.Sleep(300 * time.Millisecond)
				rss := rsOf()
				if len(rss) != 1 || len(rss[0].OwnerReferences) != 0 {
					t.Fatalf("orphaned replica sets %d, owners %v", len(rss), rss)
				}
				pods := c.pods(t, ns, sel)
				if len(pods) != 2 {
					t.Fatalf("orphaned pods = %d, want 2", len(pods))
				}
				for _, p := range pods {
					if metav1.GetControllerOf(&p).UID != rss[0].UID {
						t.Fatalf("pod %s lost its replica set", p.Name)
					}
				}
			}
		})
	}
}

func TestNamespaceDeletion(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-nsdel")
	c.runKubelet(t, ns)
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, newDeployment("app", 2, "img:1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(c.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}}}
	if _, err := c.Client.CoreV1().Services(ns).Create(c.ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "rollout", c.rolledOut(ns, "app"))
	eventually(t, 10*time.Second, "default service account", func() (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(c.ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	start := time.Now()
	if err := c.Client.CoreV1().Namespaces().Delete(c.ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "namespace removed", func() (bool, error) {
		n, err := c.Client.CoreV1().Namespaces().Get(c.ctx, ns, metav1.GetOptions{})
		if err == nil {
			return false, fmt.Errorf("phase %s conditions %v", n.Status.Phase, n.Status.Conditions)
		}
		return apierrors.IsNotFound(err), err
	})
	t.Logf("namespace emptied and removed in %v", time.Since(start))
	for _, check := range []func() (int, error){
		func() (int, error) {
			l, err := c.Client.CoreV1().Pods(ns).List(c.ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := c.Client.CoreV1().ConfigMaps(ns).List(c.ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := c.Client.AppsV1().ReplicaSets(ns).List(c.ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(c.ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
	} {
		if n, err := check(); err != nil || n != 0 {
			t.Fatalf("left behind: %d (%v)", n, err)
		}
	}
}

func (c *cluster) slices(t *testing.T, ns, svc string) []discoveryv1.EndpointSlice {
	t.Helper()
	l, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(c.ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func setReady(t *testing.T, c *cluster, ns, name string, on bool) {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := corev1.ConditionFalse
	if on {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}}
	if _, err := c.Client.CoreV1().Pods(ns).UpdateStatus(c.ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestEndpoints(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-ep")
	c.runKubelet(t, ns)
	mkPod := func(name string, ports []corev1.ContainerPort) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "ep"}},
			Spec: corev1.PodSpec{NodeName: "", Containers: []corev1.Container{{Name: "c", Image: "img", Ports: ports}}}}
		if _, err := c.Client.CoreV1().Pods(ns).Create(c.ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkPod("a", []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}})
	mkPod("b", []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}})
	mkPod("c", nil) // no "http" port: left out of the named port
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ep"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "ep"},
		Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
	}}
	if _, err := c.Client.CoreV1().Services(ns).Create(c.ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Selector-less service with hand-made endpoints: left alone.
	manual := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	if _, err := c.Client.CoreV1().Services(ns).Create(c.ctx, manual, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	manualEP := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: "192.0.2.10"}}, Ports: []corev1.EndpointPort{{Port: 5432, Protocol: corev1.ProtocolTCP}}}}}
	if _, err := c.Client.CoreV1().Endpoints(ns).Create(c.ctx, manualEP, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	podPort := map[string]int32{}
	eventually(t, 10*time.Second, "slice with pods a and b", func() (bool, error) {
		sl := c.slices(t, ns, "ep")
		var eps []discoveryv1.Endpoint
		for _, s := range sl {
			if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" || metav1.GetControllerOf(&s) == nil {
				return false, fmt.Errorf("slice %s labels %v", s.Name, s.Labels)
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					eps = append(eps, e)
					podPort[e.TargetRef.Name] = *s.Ports[0].Port
				}
			}
		}
		return len(eps) == 2, fmt.Errorf("%d ready endpoints in %d slices", len(eps), len(sl))
	})
	if podPort["a"] != 8080 || podPort["b"] != 9090 {
		t.Fatalf("named target ports resolved to %v", podPort)
	}
	if _, ok := podPort["c"]; ok {
		t.Fatal("pod without the named port is an endpoint")
	}
	eventually(t, 10*time.Second, "Endpoints object", func() (bool, error) {
		e, err := c.Client.CoreV1().Endpoints(ns).Get(c.ctx, "ep", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		n := 0
		for _, s := range e.Subsets {
			n += len(s.Addresses)
		}
		return n == 2 && len(e.Subsets) == 2, fmt.Errorf("subsets %+v", e.Subsets)
	})

	// Readiness follows the pod.
	setReady(t, c, ns, "a", false)
	eventually(t, 10*time.Second, "a not ready", func() (bool, error) {
		for _, s := range c.slices(t, ns, "ep") {
			for _, e := range s.Endpoints {
				if e.TargetRef.Name == "a" {
					return !*e.Conditions.Ready && !*e.Conditions.Serving && !*e.Conditions.Terminating, fmt.Errorf("conditions %+v", e.Conditions)
				}
			}
		}
		return false, fmt.Errorf("a missing")
	})
	eventually(t, 10*time.Second, "a in notReadyAddresses", func() (bool, error) {
		e, err := c.Client.CoreV1().Endpoints(ns).Get(c.ctx, "ep", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range e.Subsets {
			for _, a := range s.NotReadyAddresses {
				if a.TargetRef.Name == "a" {
					return true, nil
				}
			}
		}
		return false, fmt.Errorf("subsets %+v", e.Subsets)
	})
	// Deleted pods leave.
	if err := c.Client.CoreV1().Pods(ns).Delete(c.ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b removed", func() (bool, error) {
		for _, s := range c.slices(t, ns, "ep") {
			for _, e := range s.Endpoints {
				if e.TargetRef.Name == "b" {
					return false, nil
				}
			}
		}
		return true, nil
	})
	// The hand-made endpoints are untouched and no slice was made for them.
	got, err := c.Client.CoreV1().Endpoints(ns).Get(c.ctx, "manual", metav1.GetOptions{})
	if err != nil || len(got.Subsets) != 1 || got.Subsets[0].Addresses[0].IP != "192.0.2.10" {
		t.Fatalf("manual endpoints changed: %+v %v", got, err)
	}
	if sl := c.slices(t, ns, "manual"); len(sl) != 0 {
		t.Fatalf("slices made for a selector-less service: %d", len(sl))
	}
	// Deleting the service removes what was published.
	if err := c.Client.CoreV1().Services(ns).Delete(c.ctx, "ep", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "published objects removed", func() (bool, error) {
		_, err := c.Client.CoreV1().Endpoints(ns).Get(c.ctx, "ep", metav1.GetOptions{})
		return apierrors.IsNotFound(err) && len(c.slices(t, ns, "ep")) == 0, err
	})
}

func TestServiceLBStatus(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-lb")
	mkNode := func(name string, ready bool, addrs ...corev1.NodeAddress) {
		n, err := c.Client.CoreV1().Nodes().Create(c.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		n.Status.Addresses = addrs
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
		if _, err := c.Client.CoreV1().Nodes().UpdateStatus(c.ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	mkNode("orchtest-n1", true, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.2"})
	mkNode("orchtest-n2", false, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.3"})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "lb"},
		Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	if _, err := c.Client.CoreV1().Services(ns).Create(c.ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ingress := func(want ...string) func() (bool, error) {
		return func() (bool, error) {
			s, err := c.Client.CoreV1().Services(ns).Get(c.ctx, "lb", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			var got []string
			for _, i := range s.Status.LoadBalancer.Ingress {
				got = append(got, i.IP)
			}
			return fmt.Sprint(got) == fmt.Sprint(want), fmt.Errorf("ingress %v, want %v", got, want)
		}
	}
	eventually(t, 10*time.Second, "ingress of the ready node", ingress("10.0.0.2"))
	mkNode("orchtest-n3", true, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.4"}, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"})
	eventually(t, 10*time.Second, "external IP preferred", ingress("10.0.0.2", "203.0.113.7"))
	if err := c.Client.CoreV1().Nodes().Delete(c.ctx, "orchtest-n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node removal", ingress("203.0.113.7"))
}
