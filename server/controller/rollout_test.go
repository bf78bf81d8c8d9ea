package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubectl/pkg/polymorphichelpers"
)

// updateDeployment changes a deployment, retrying conflicts with the
// controllers' writes.
func (c *cluster) updateDeployment(t *testing.T, ns, name string, change func(*appsv1.Deployment)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(d)
		_, err = c.Client.AppsV1().Deployments(ns).Update(c.ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) setImage(t *testing.T, ns, name, image string) {
	t.Helper()
	c.updateDeployment(t, ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image })
}

func (c *cluster) waitRollout(t *testing.T, ns, name string) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	eventually(t, 20*time.Second, "rollout of "+name, c.rolledOut(ns, name))
}

// TestKubectlRollout drives kubectl's own rollout undo, history and restart
// code against the controllers.
func TestKubectlRollout(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-kubectl")
	c.runKubelet(t, ns)
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, newDeployment("web", 2, "web:1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitRollout(t, ns, "web")
	c.setImage(t, ns, "web", "web:2")
	c.waitRollout(t, ns, "web")

	gk := schema.GroupKind{Group: "apps", Kind: "Deployment"}
	rb, err := polymorphichelpers.RollbackerFor(gk, c.Client)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if _, err := rb.Rollback(d, nil, 0, cmdutil.DryRunNone); err != nil {
		t.Fatalf("rollout undo: %v", err)
	}
	c.waitRollout(t, ns, "web")
	d, _ = c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "web:1" || d.Annotations["deployment.kubernetes.io/revision"] != "3" {
		t.Fatalf("after undo: image %s revision %s", img, d.Annotations["deployment.kubernetes.io/revision"])
	}
	if n := len(c.replicaSets(t, ns)); n != 2 {
		t.Fatalf("undo made a new replica set: %d", n)
	}
	for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
		if p.Spec.Containers[0].Image != "web:1" {
			t.Fatalf("pod %s runs %s after undo", p.Name, p.Spec.Containers[0].Image)
		}
	}

	hv, err := polymorphichelpers.HistoryViewerFor(gk, c.Client)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := hv.ViewHistory(ns, "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hist, "2 ") || !strings.Contains(hist, "3 ") || strings.Contains(hist, "\n1 ") {
		t.Fatalf("history:\n%s", hist)
	}

	// rollout restart patches a template annotation: a new revision rolls.
	patch, err := polymorphichelpers.ObjectRestarterFn(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(c.ctx, "web", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitRollout(t, ns, "web")
	if n := len(c.replicaSets(t, ns)); n != 3 {
		t.Fatalf("restart: %d replica sets, want 3", n)
	}
	d, _ = c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if d.Annotations["deployment.kubernetes.io/revision"] != "4" {
		t.Fatalf("revision after restart %s", d.Annotations["deployment.kubernetes.io/revision"])
	}
}

func TestPausedDeployment(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-pause")
	c.runKubelet(t, ns)
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, newDeployment("web", 2, "web:1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitRollout(t, ns, "web")
	c.updateDeployment(t, ns, "web", func(d *appsv1.Deployment) {
		d.Spec.Paused = true
		d.Spec.Template.Spec.Containers[0].Image = "web:2"
	})
	eventually(t, 10*time.Second, "paused condition", func() (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := findCond(d, appsv1.DeploymentProgressing)
		return cond != nil && cond.Reason == "DeploymentPaused" && d.Status.ObservedGeneration == d.Generation, nil
	})
	time.Sleep(200 * time.Millisecond)
	if n := len(c.replicaSets(t, ns)); n != 1 {
		t.Fatalf("paused deployment rolled: %d replica sets", n)
	}
	// Scaling still works while paused.
	c.updateDeployment(t, ns, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = int32p(3) })
	eventually(t, 10*time.Second, "scaled while paused", func() (bool, error) {
		return len(c.pods(t, ns, map[string]string{"app": "web"})) == 3, nil
	})
	c.updateDeployment(t, ns, "web", func(d *appsv1.Deployment) { d.Spec.Paused = false })
	c.waitRollout(t, ns, "web")
	for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
		if p.Spec.Containers[0].Image != "web:2" {
			t.Fatalf("pod %s runs %s after resume", p.Name, p.Spec.Containers[0].Image)
		}
	}
}

func TestProgressDeadline(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-deadline")
	k := c.runKubelet(t, ns)
	k.setHold(func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image == "broken" })
	d := newDeployment("web", 2, "web:1")
	d.Spec.ProgressDeadlineSeconds = int32p(1)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: &intstr.IntOrString{Type: intstr.Int, IntVal: 0},
		MaxSurge:       &intstr.IntOrString{Type: intstr.String, StrVal: "50%"},
	}}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitRollout(t, ns, "web")
	c.setImage(t, ns, "web", "broken")
	eventually(t, 15*time.Second, "ProgressDeadlineExceeded", func() (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cond := findCond(d, appsv1.DeploymentProgressing)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == "ProgressDeadlineExceeded", nil
	})
	// maxUnavailable 0: the two good pods still serve, one surge pod waits.
	readyOld, pending := 0, 0
	for _, p := range c.pods(t, ns, map[string]string{"app": "web"}) {
		switch {
		case p.Spec.Containers[0].Image == "web:1" && ready(&p):
			readyOld++
		case p.Spec.Containers[0].Image == "broken":
			pending++
		}
	}
	if readyOld != 2 || pending != 1 {
		t.Fatalf("old ready %d, new pending %d", readyOld, pending)
	}
	d, _ = c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
	if d.Status.UnavailableReplicas != 1 || d.Status.UpdatedReplicas != 1 || d.Status.AvailableReplicas != 2 {
		t.Fatalf("status %+v", d.Status)
	}
	if cond := findCond(d, appsv1.DeploymentAvailable); cond == nil || cond.Status != corev1.ConditionTrue {
		t.Fatalf("Available %+v", cond)
	}
}

func TestMinReadySecondsAndEvents(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-minready")
	c.runKubelet(t, ns)
	d := newDeployment("web", 2, "web:1")
	// Condition times have one-second precision: with 2s, availability
	// comes at least 1s after the pods turned ready.
	d.Spec.MinReadySeconds = 2
	start := time.Now()
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ready but not yet available", func() (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(c.ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if d.Status.AvailableReplicas > 0 && time.Since(start) < time.Second {
			t.Fatalf("available before minReadySeconds: %+v", d.Status)
		}
		return d.Status.ReadyReplicas == 2, nil
	})
	c.waitRollout(t, ns, "web")
	if took := time.Since(start); took < time.Second {
		t.Fatalf("available after %v, before minReadySeconds", took)
	}
	eventually(t, 10*time.Second, "events", func() (bool, error) {
		l, err := c.Client.CoreV1().Events(ns).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		reasons := map[string]bool{}
		for _, e := range l.Items {
			reasons[e.InvolvedObject.Kind+"/"+e.Reason] = true
		}
		return reasons["Deployment/ScalingReplicaSet"] && reasons["ReplicaSet/SuccessfulCreate"], fmt.Errorf("reasons %v", reasons)
	})
}

func TestProportionalScalingMidRollout(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "orchtest-prop")
	k := c.runKubelet(t, ns)
	k.setHold(func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image == "stuck" })
	d := newDeployment("web", 4, "web:1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: &intstr.IntOrString{Type: intstr.Int, IntVal: 1},
		MaxSurge:       &intstr.IntOrString{Type: intstr.Int, IntVal: 1},
	}}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitRollout(t, ns, "web")
	c.setImage(t, ns, "web", "stuck")
	sizes := func() (old, cur int32) {
		for _, rs := range c.replicaSets(t, ns) {
			if rs.Spec.Template.Spec.Containers[0].Image == "stuck" {
				cur = *rs.Spec.Replicas
			} else {
				old = *rs.Spec.Replicas
			}
		}
		return
	}
	// Stuck mid-rollout: old 3 (one unavailable allowed), new 2 (surge).
	eventually(t, 10*time.Second, "stalled rollout", func() (bool, error) {
		o, n := sizes()
		return o == 3 && n == 2, fmt.Errorf("old %d new %d", o, n)
	})
	c.updateDeployment(t, ns, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = int32p(8) })
	// 8 + surge 1 = 9 replicas allowed, spread by size: 3:2 of 5 -> +4.
	eventually(t, 10*time.Second, "proportional scale-up", func() (bool, error) {
		o, n := sizes()
		return o+n == 9 && o > 3 && n > 2, fmt.Errorf("old %d new %d", o, n)
	})
	for _, rs := range c.replicaSets(t, ns) {
		if rs.Annotations["deployment.kubernetes.io/desired-replicas"] != "8" || rs.Annotations["deployment.kubernetes.io/max-replicas"] != "9" {
			t.Fatalf("rs %s annotations %v", rs.Name, rs.Annotations)
		}
	}
}
