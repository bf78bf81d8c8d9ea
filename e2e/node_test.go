package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// workloadPods run on the agent's node h1, so every kubectl stream goes
// through the server's tunnel to a remote agent.
const workloadPods = `
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: busybox:stable, command: [sh, -c, "echo boom; exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:stable
    command: [sh, -c, "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]
    resources: {limits: {memory: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - name: c
    image: busybox:stable
    command: [sh, -c, "touch /tmp/alive; sleep 4; rm /tmp/alive; sleep 3600"]
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: tools}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: "nettool:e2e", command: [nettool, serve], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Pod
metadata: {name: nokey}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - name: c
    image: busybox:stable
    command: [sleep, "3600"]
    env:
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: settings, key: no-such-key}}
---
apiVersion: v1
kind: Pod
metadata: {name: noimage} # a registry address in the lab where nothing listens
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: "172.31.250.200:5000/nothing:1"}
---
apiVersion: v1
kind: Pod
metadata: {name: badcmd}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: busybox:stable, command: [/no/such/command]}
---
apiVersion: v1
kind: Pod
metadata: {name: port-a}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: busybox:stable, command: [sleep, "3600"], ports: [{containerPort: 7000, hostPort: 7000}]}
`

// portConflict asks for h1's hostPort 7000, which port-a holds.
const portConflict = `
apiVersion: v1
kind: Pod
metadata: {name: port-b}
spec:
  nodeSelector: {kubernetes.io/hostname: h1}
  containers:
  - {name: c, image: busybox:stable, command: [sleep, "3600"], ports: [{containerPort: 7000, hostPort: 7000}]}
`

// TestNodeWorkloads checks, with kubectl against a two-node cluster of
// real orch processes, how the node agent runs pods (issue 6): restart
// back-off, OOM kills, liveness probes, logs/exec/cp/port-forward, the
// upstream reasons for bad pods, and pods left untouched while the server
// is down for a minute.
func TestNodeWorkloads(t *testing.T) {
	bin, root, artifacts := e2eEnv(t)
	c := newCluster(t, bin, artifacts, 2)
	h1 := c.lab.Hosts[1]
	step := stepper(t, c)

	restarts := map[string][]time.Time{} // crash's restart count increments
	var watchStop func()
	step("up", func() {
		c.deliverImages(root)
		c.up()
		w, err := c.kube.CoreV1().Pods("default").Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=crash"})
		if err != nil {
			c.t.Fatal(err)
		}
		var mu sync.Mutex
		done := make(chan struct{})
		go func() {
			defer close(done)
			last := int32(0)
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					continue
				}
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || len(p.Status.ContainerStatuses) == 0 {
					continue
				}
				if n := p.Status.ContainerStatuses[0].RestartCount; n > last {
					last = n
					mu.Lock()
					restarts["crash"] = append(restarts["crash"], time.Now())
					mu.Unlock()
				}
			}
		}()
		watchStop = func() { w.Stop(); <-done }
		c.kubectlStdin(workloadPods, "apply", "-f", "-")
	})

	step("logs-exec-cp-port-forward", func() {
		c.eventually(60*time.Second, "tools running", func() error { return podIsReady(c, "tools") })
		if out := c.kubectl("logs", "tools"); !strings.Contains(out, "serving tcp :8080") {
			c.t.Errorf("kubectl logs tools = %q", out)
		}
		if out := strings.TrimSpace(c.kubectl("exec", "tools", "--", "hostname")); out != "tools" {
			c.t.Errorf("kubectl exec tools -- hostname = %q", out)
		}
		// stdin through exec.
		if out, err := c.kubectlIn([]byte("hello through stdin\n"), "exec", "-i", "tools", "--", "cat"); err != nil || out != "hello through stdin\n" {
			c.t.Errorf("kubectl exec -i tools -- cat: %q %v", out, err)
		}
		// kubectl cp both ways.
		src := filepath.Join(c.artifacts, "cp-src.txt")
		writeFile(c.t, src, "copied into the pod\n")
		c.kubectl("cp", src, "tools:/tmp/in.txt")
		if out := c.kubectl("exec", "tools", "--", "cat", "/tmp/in.txt"); out != "copied into the pod\n" {
			c.t.Errorf("file copied in: %q", out)
		}
		back := filepath.Join(c.artifacts, "cp-back.txt")
		c.kubectl("cp", "tools:/tmp/in.txt", back)
		if b, err := os.ReadFile(back); err != nil || string(b) != "copied into the pod\n" {
			c.t.Errorf("file copied back: %q %v", b, err)
		}
		// kubectl port-forward on the client host.
		pf := c.portForward(nil, "pod/tools", 8080)
		for i := 0; i < 3; i++ {
			out, err := dialFrom(c.lab.Client.NS, "tcp", "127.0.0.1:"+strconv.Itoa(pf.local))
			if err != nil || !strings.HasPrefix(out, "tools ") {
				c.t.Errorf("through port-forward: %q %v", out, err)
			}
		}
		pf.stop()
	})

	step("bad-pods", func() {
		// The upstream reason in the pod's status, and an event.
		waiting := func(pod string, reasons ...string) {
			c.eventually(60*time.Second, pod+" waiting with "+strings.Join(reasons, " or "), func() error {
				p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
				if err != nil {
					return err
				}
				for _, cs := range p.Status.ContainerStatuses {
					for _, r := range reasons {
						if (cs.State.Waiting != nil && cs.State.Waiting.Reason == r) ||
							(cs.State.Terminated != nil && cs.State.Terminated.Reason == r) ||
							(cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == r) {
							return nil
						}
					}
				}
				return fmt.Errorf("statuses %+v", p.Status.ContainerStatuses)
			})
			c.eventually(30*time.Second, "a Warning event for "+pod, func() error {
				evs, err := c.kube.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
				if err != nil {
					return err
				}
				for _, e := range evs.Items {
					if e.Type == corev1.EventTypeWarning {
						return nil
					}
				}
				return fmt.Errorf("%d events, none a warning", len(evs.Items))
			})
		}
		waiting("nokey", "CreateContainerConfigError")
		waiting("noimage", "ErrImagePull", "ImagePullBackOff")
		waiting("badcmd", "RunContainerError", "ContainerCannotRun", "StartError", "CrashLoopBackOff")
		c.kubectlStdin(portConflict, "apply", "-f", "-")
		c.eventually(30*time.Second, "port-b unschedulable", func() error {
			p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), "port-b", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cd := range p.Status.Conditions {
				if cd.Type == corev1.PodScheduled && cd.Status == corev1.ConditionFalse && cd.Reason == corev1.PodReasonUnschedulable {
					c.t.Logf("port-b: %s", cd.Message)
					return nil
				}
			}
			return fmt.Errorf("conditions %+v, node %q", p.Status.Conditions, p.Spec.NodeName)
		})
		c.t.Logf("kubectl get pods:\n%s", c.kubectl("get", "pods", "-o", "wide"))
	})

	step("bad-specs", func() {
		// Refused by validation, with the upstream message.
		out, err := c.kubectlIn([]byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: mismatch}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, image: "busybox:stable"}]}
`), "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "selector` does not match template `labels`") {
			c.t.Errorf("Deployment whose selector misses its template: %v\n%s", err, out)
		}
		c.kubectlStdin(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: fine}
spec:
  replicas: 1
  selector: {matchLabels: {app: fine}}
  template:
    metadata: {labels: {app: fine}}
    spec:
      nodeSelector: {disktype: none-such}
      containers: [{name: c, image: "busybox:stable", command: [sleep, "3600"]}]
`, "apply", "-f", "-")
		if out, err := c.kubectlErr("scale", "deployment", "fine", "--replicas=-1"); err == nil {
			c.t.Errorf("negative replicas accepted: %s", out)
		}
		// An impossible nodeSelector: a clear condition, not a hot loop.
		c.eventually(30*time.Second, "fine's pod unschedulable", func() error {
			pods, err := c.kube.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=fine"})
			if err != nil {
				return err
			}
			if len(pods.Items) != 1 {
				return fmt.Errorf("%d pods", len(pods.Items))
			}
			for _, cd := range pods.Items[0].Status.Conditions {
				if cd.Type == corev1.PodScheduled && cd.Reason == corev1.PodReasonUnschedulable && strings.Contains(cd.Message, "node affinity/selector") {
					return nil
				}
			}
			return fmt.Errorf("conditions %+v", pods.Items[0].Status.Conditions)
		})
		c.kubectl("delete", "deployment", "fine")
	})

	step("oom-liveness-backoff", func() {
		c.eventually(60*time.Second, "hog OOMKilled", func() error {
			p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), "hog", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) == 1 {
				if term := p.Status.ContainerStatuses[0].State.Terminated; term != nil && term.Reason == "OOMKilled" && term.ExitCode == 137 {
					if p.Status.Phase != corev1.PodFailed {
						return fmt.Errorf("phase %s", p.Status.Phase)
					}
					return nil
				}
			}
			return fmt.Errorf("status %+v", p.Status.ContainerStatuses)
		})
		c.eventually(60*time.Second, "live restarted by its liveness probe", func() error {
			p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), "live", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1 {
				return nil
			}
			return fmt.Errorf("status %+v", p.Status.ContainerStatuses)
		})
		if out := c.kubectl("describe", "pod", "live"); !strings.Contains(out, "Liveness probe failed") {
			c.t.Errorf("kubectl describe pod live shows no failed liveness probe:\n%s", out)
		}
		c.eventually(90*time.Second, "crash in CrashLoopBackOff after 3 restarts", func() error {
			p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), "crash", metav1.GetOptions{})
			if err != nil {
				return err
			}
			cs := p.Status.ContainerStatuses
			if len(cs) == 1 && cs[0].RestartCount >= 3 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "CrashLoopBackOff" {
				return nil
			}
			return fmt.Errorf("status %+v", cs)
		})
		watchStop()
		ts := restarts["crash"]
		var gaps []string
		for i := 1; i < len(ts); i++ {
			gaps = append(gaps, fmt.Sprintf("%.1fs", ts[i].Sub(ts[i-1]).Seconds()))
		}
		c.t.Logf("crash: restarts %d, gaps between restarts %v", len(ts), gaps)
		if len(ts) < 3 || ts[2].Sub(ts[1]) <= ts[1].Sub(ts[0]) {
			c.t.Errorf("back-off does not grow: gaps %v", gaps)
		}
		// A restart between the agent's lookup of the previous container
		// and its read can answer an error (it used to answer an empty
		// log with 200: agent TestPreviousLogsWhileRestarting); each such
		// answer is logged and asked again for a few seconds.
		tries := 0
		c.eventually(10*time.Second, "kubectl logs --previous crash shows its output", func() error {
			tries++
			out, err := c.kubectlErr("logs", "crash", "--previous")
			if err != nil || !strings.Contains(out, "boom") {
				c.t.Logf("kubectl logs --previous crash (try %d): %q %v", tries, out, err)
				return fmt.Errorf("output %q, err %v", out, err)
			}
			return nil
		})
	})

	step("server-down-a-minute", func() {
		// With the server gone for a minute, pods on h1 keep running (the
		// tools pod answers on its IP from the node), and once the server
		// is back the node is Ready and no container was restarted.
		tools, err := c.kube.CoreV1().Pods("default").Get(context.Background(), "tools", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		before := c.snapshot()
		c.stop(c.lab.Hosts[0])
		down := time.Now()
		for time.Since(down) < time.Minute {
			if out, err := dialFrom(h1.NS, "tcp", net.JoinHostPort(tools.Status.PodIP, "8080")); err != nil || !strings.HasPrefix(out, "tools ") {
				c.t.Errorf("tools pod while the server is down: %q %v", out, err)
			}
			time.Sleep(5 * time.Second)
		}
		c.mu.Lock()
		agent := c.procs["h1"]
		c.mu.Unlock()
		select {
		case <-agent.done:
			c.t.Fatalf("the agent exited while the server was down: %v", agent.err)
		default:
		}
		c.startServer()
		back := time.Now()
		c.eventually(60*time.Second, "h1's lease renewed after the server returned", func() error { return c.leaseRenewedSince("h1", back) })
		c.eventually(60*time.Second, "both nodes Ready", func() error { return c.nodesReady("h0", "h1") })
		// Streams to the node work again (its tunnel reconnects).
		c.eventually(30*time.Second, "kubectl exec on h1 again", func() error {
			out, err := c.kubectlErr("exec", "tools", "--", "true")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		c.t.Logf("node h1 renewed its lease and served exec %.1f s after the server returned", time.Since(back).Seconds())
		after := c.snapshot()
		for k, v := range before.containers {
			if strings.HasPrefix(k, "crash/") || strings.HasPrefix(k, "live/") {
				continue // restarting on their own
			}
			if after.containers[k] != v {
				c.t.Errorf("container %s changed while the server was down: %s → %s", k, v, after.containers[k])
			}
		}
	})

	step("agent-alive", func() {
		// The agent survived everything above.
		c.mu.Lock()
		agent := c.procs["h1"]
		c.mu.Unlock()
		select {
		case <-agent.done:
			c.t.Fatalf("the agent on h1 exited: %v", agent.err)
		default:
		}
		c.kubectl("exec", "tools", "--", "true")
	})
}
