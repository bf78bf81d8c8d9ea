package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDeck is the acceptance test of issue 11: the deck's sample app on a
// three-node orch cluster in the lab, through scaling, a rolling upgrade,
// a node failure and a server restart. It runs when ORCH_E2E_BIN names an
// orch binary (`make e2e`) and as root.
func TestDeck(t *testing.T) {
	bin, root, artifacts := e2eEnv(t)
	deck := filepath.Join(root, "examples", "deck")

	c := newCluster(t, bin, artifacts, 3)
	step := stepper(t, c)
	h0, h1, h2 := c.lab.Hosts[0], c.lab.Hosts[1], c.lab.Hosts[2]
	nodeAddrs := []string{h0.IP.String() + ":80", h1.IP.String() + ":80", h2.IP.String() + ":80"}

	step("1-images", func() { c.deliverImages(root) })

	step("2-cluster-up", func() {
		// The deck's redis manifest goes through the server's drop-in
		// manifests directory; the rest is applied with kubectl below.
		man := filepath.Join(h0.DataDir, "server", "manifests")
		if err := os.MkdirAll(man, 0o755); err != nil {
			c.t.Fatal(err)
		}
		copyFile(c.t, filepath.Join(deck, "redis.yaml"), filepath.Join(man, "redis.yaml"))
		c.up("--default-not-ready-toleration-seconds", "10", "--default-unreachable-toleration-seconds", "10")
	})

	step("3-deploy", func() {
		c.eventually(30*time.Second, "the drop-in redis Service", func() error {
			_, err := c.kube.CoreV1().Services("default").Get(context.Background(), "redis", metav1.GetOptions{})
			return err
		})
		user, pass := filepath.Join(artifacts, "username.txt"), filepath.Join(artifacts, "password.txt")
		writeFile(c.t, user, "admin")
		writeFile(c.t, pass, "1f2d1e2e67df")
		c.kubectl("create", "secret", "generic", "mysecret", "--from-file=username="+user, "--from-file=password="+pass)
		for _, f := range []string{"redis.yaml", "web.yaml", "nginx-configmap.yaml", "secret-env-pod.yaml"} {
			c.t.Logf("kubectl apply -f %s:\n%s", f, c.kubectl("apply", "-f", filepath.Join(deck, f)))
		}
		c.eventually(90*time.Second, "web and redis running", func() error {
			for _, sel := range []string{"name=web", "name=redis"} {
				pods, err := c.runningPods(sel)
				if err != nil {
					return err
				}
				if len(pods) != 1 {
					return fmt.Errorf("%s: %d ready pods", sel, len(pods))
				}
			}
			return nil
		})
	})

	step("4-web-svc", func() {
		c.eventually(30*time.Second, "web-svc LoadBalancer ingress", func() error {
			svc, err := c.kube.CoreV1().Services("default").Get(context.Background(), "web-svc", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(svc.Status.LoadBalancer.Ingress) == 0 {
				return fmt.Errorf("no ingress yet")
			}
			return nil
		})
		c.t.Logf("kubectl get svc:\n%s", c.kubectl("get", "svc", "-o", "wide"))
		// Through every node's address, by the injected variables and by
		// the DNS name: the counter goes up each time.
		var prev int64 = -1
		for _, path := range []string{"/", "/?via=dns"} {
			for _, addr := range nodeAddrs {
				var a answer
				c.eventually(30*time.Second, "web-svc on "+addr+path, func() error {
					var err error
					a, err = c.visit(addr, path)
					return err
				})
				if a.visits <= prev {
					c.t.Errorf("visit counter went from %d to %d", prev, a.visits)
				}
				prev = a.visits
				c.t.Logf("http://%s%s: web-python %s on %s, %d visits", addr, path, a.version, a.host, a.visits)
			}
		}
		body, err := c.get(nodeAddrs[0], "/?via=dns")
		if err != nil || !strings.Contains(body, "(redis redis:6379)") {
			c.t.Errorf("via DNS: %q %v", body, err)
		}
	})

	step("5-scale", func() {
		c.kubectl("scale", "deployment", "web-deployment", "--replicas=2")
		c.eventually(60*time.Second, "2 web pods", func() error { return c.webPods(2, "") })
		// As in the deck: edit the Deployment, replicas 2 → 3.
		editor := filepath.Join(artifacts, "editor.sh")
		writeFile(c.t, editor, "#!/bin/sh\nsed -i 's/^  replicas: 2$/  replicas: 3/' \"$1\"\n")
		if err := os.Chmod(editor, 0o755); err != nil {
			c.t.Fatal(err)
		}
		out, err := c.kubectlEnv([]string{"EDITOR=" + editor, "KUBE_EDITOR=" + editor}, "edit", "deployment", "web-deployment")
		if err != nil || !strings.Contains(out, "edited") {
			c.t.Fatalf("kubectl edit: %v\n%s", err, out)
		}
		c.eventually(60*time.Second, "3 web pods", func() error { return c.webPods(3, "") })
		pods, _ := c.runningPods("name=web")
		nodes := map[string]bool{}
		for _, p := range pods {
			nodes[p.Spec.NodeName] = true
		}
		if len(nodes) != 3 {
			c.t.Errorf("3 web pods on nodes %v, want one on each of the three", nodes)
		}
		// Every node's proxy has the three endpoints once each node's
		// address has led to each of the pods.
		for _, addr := range nodeAddrs {
			c.eventually(20*time.Second, "all 3 pods answering through "+addr, func() error {
				seen := map[string]bool{}
				for i := 0; i < 60 && len(seen) < 3; i++ {
					a, err := c.visit(addr, "/")
					if err != nil {
						return err
					}
					seen[a.host] = true
				}
				if len(seen) < 3 {
					return fmt.Errorf("answers from %v only", seen)
				}
				return nil
			})
		}
		// 3,000 requests through the nodes' addresses: every pod answers,
		// and the spread passes a chi-square test of uniformity.
		counts := map[string]int{}
		for _, p := range pods {
			counts[p.Name] = 0
		}
		const n = 3000
		var mu sync.Mutex
		var wg sync.WaitGroup
		var fails []string
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 6 {
					a, err := c.visit(nodeAddrs[i%3], "/")
					mu.Lock()
					if err != nil {
						fails = append(fails, err.Error())
					} else {
						counts[a.host]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(fails) > 0 {
			c.t.Errorf("%d of %d requests failed, first: %s", len(fails), n, fails[0])
		}
		if len(counts) != 3 {
			c.t.Fatalf("answers came from %v, want the 3 pods", counts)
		}
		x := chiSquare(counts, n-len(fails))
		c.t.Logf("3,000 requests over 3 pods: %v; chi-square %.2f (critical value at p=0.001, 2 dof: %.3f)", counts, x, chiSquareCritical001[2])
		if x > chiSquareCritical001[2] {
			c.t.Errorf("spread %v is not uniform: chi-square %.2f > %.3f", counts, x, chiSquareCritical001[2])
		}
	})

	rollout := func(image, from, to string, undo bool) {
		// A client requests the Service in a loop through every node the
		// whole time: no request may fail.
		l := c.startLoop(nodeAddrs, "/")
		if undo {
			c.kubectl("rollout", "undo", "deployment/web-deployment")
		} else {
			c.kubectl("set", "image", "deployment/web-deployment", "web="+image)
		}
		c.kubectl("rollout", "status", "deployment/web-deployment", "--timeout=120s")
		c.eventually(30*time.Second, "answers from "+to+" only", func() error {
			last := l.last(30)
			for _, v := range last {
				if v != to {
					return fmt.Errorf("last answers %v", last)
				}
			}
			if last == nil {
				return fmt.Errorf("too few answers")
			}
			return nil
		})
		ok, failures, versions := l.finish()
		tr := transitions(versions)
		c.t.Logf("%d requests during the rollout, %d failed; versions in order: %v", ok+len(failures), len(failures), tr)
		if len(failures) > 0 {
			c.t.Errorf("%d failed requests during the rollout:\n%s", len(failures), strings.Join(first(failures, 20), "\n"))
		}
		if len(tr) == 0 || tr[0] != from || tr[len(tr)-1] != to {
			c.t.Errorf("versions %v: want answers switching from %s to %s", tr, from, to)
		}
		c.eventually(30*time.Second, "3 "+image+" pods", func() error { return c.webPods(3, image) })
	}

	step("6-rolling-upgrade", func() {
		c.kubectl("patch", "deployment", "web-deployment", "-p", `{"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":0,"maxSurge":1}}}}`)
		rollout("web-python:v2", "v1", "v2", false)
	})

	step("7-rollout-undo", func() {
		rollout("web-python:v1", "v2", "v1", true)
		c.t.Logf("kubectl rollout history:\n%s", c.kubectl("rollout", "history", "deployment/web-deployment"))
	})

	step("8-configmap-secret", func() {
		cm, err := c.kube.CoreV1().ConfigMaps("default").Get(context.Background(), "nginx-config", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		c.eventually(60*time.Second, "nginx-configmap-pod running", func() error { return podRunning(c, "nginx-configmap-pod") })
		if got := c.kubectl("exec", "nginx-configmap-pod", "--", "cat", "/etc/nginx/nginx.conf"); got != cm.Data["nginx.conf"] {
			c.t.Errorf("mounted nginx.conf = %q, want the ConfigMap's %q", got, cm.Data["nginx.conf"])
		}
		if got := c.kubectl("logs", "nginx-configmap-pod"); !strings.Contains(got, `return 200 "hello from a ConfigMap\n"`) {
			c.t.Errorf("kubectl logs nginx-configmap-pod = %q", got)
		}
		c.eventually(60*time.Second, "secret-env-pod running", func() error { return podRunning(c, "secret-env-pod") })
		env := c.kubectl("exec", "secret-env-pod", "--", "env")
		for _, kv := range []string{"SECRET_USERNAME=admin", "SECRET_PASSWORD=1f2d1e2e67df"} {
			if !hasLine(env, kv) {
				c.t.Errorf("secret-env-pod env lacks %s:\n%s", kv, env)
			}
		}
		yaml := c.kubectl("get", "secret", "mysecret", "-o", "yaml")
		for _, kv := range []string{"username: " + base64.StdEncoding.EncodeToString([]byte("admin")), "password: MWYyZDFlMmU2N2Rm"} {
			if !strings.Contains(yaml, kv) {
				c.t.Errorf("kubectl get secret mysecret -o yaml lacks %q:\n%s", kv, yaml)
			}
		}
		// The deck's service-discovery slide, with the real cluster IP.
		svc, err := c.kube.CoreV1().Services("default").Get(context.Background(), "redis-master", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		ip := svc.Spec.ClusterIP
		webEnv := c.kubectl("exec", "deploy/web-deployment", "--", "env")
		for _, kv := range []string{
			"REDIS_MASTER_SERVICE_HOST=" + ip, "REDIS_MASTER_SERVICE_PORT=6379",
			"REDIS_MASTER_PORT=tcp://" + ip + ":6379", "REDIS_MASTER_PORT_6379_TCP=tcp://" + ip + ":6379",
			"REDIS_MASTER_PORT_6379_TCP_PROTO=tcp", "REDIS_MASTER_PORT_6379_TCP_PORT=6379",
			"REDIS_MASTER_PORT_6379_TCP_ADDR=" + ip,
		} {
			if !hasLine(webEnv, kv) {
				c.t.Errorf("web pod env lacks %s:\n%s", kv, webEnv)
			}
		}
	})

	step("9-node-stop", func() {
		before, err := c.kube.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=h1"})
		if err != nil {
			c.t.Fatal(err)
		}
		var moved []string
		for _, p := range before.Items {
			if len(p.OwnerReferences) > 0 {
				moved = append(moved, p.Name)
			}
		}
		c.t.Logf("pods on h1: %d (%v controlled by a ReplicaSet)", len(before.Items), moved)
		l := c.startLoop([]string{nodeAddrs[0], nodeAddrs[2]}, "/")
		stopAt := time.Now()
		c.powerOff(h1)
		var notReady time.Time
		c.eventually(90*time.Second, "h1 NotReady", func() error {
			n, err := c.kube.CoreV1().Nodes().Get(context.Background(), "h1", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, t := range n.Spec.Taints {
				if t.Key == corev1.TaintNodeUnreachable && t.Effect == corev1.TaintEffectNoExecute {
					notReady = time.Now()
					return nil
				}
			}
			return fmt.Errorf("no unreachable NoExecute taint yet: %v", n.Spec.Taints)
		})
		c.t.Logf("h1 tainted unreachable %.1f s after it stopped", notReady.Sub(stopAt).Seconds())
		// tolerationSeconds (10) + 15 s.
		c.eventually(25*time.Second, "h1's pods replaced on h0 and h2", func() error {
			if err := c.webPods(3, ""); err != nil {
				return err
			}
			pods, err := c.runningPods("name=redis")
			if err != nil {
				return err
			}
			if len(pods) != 1 || pods[0].Spec.NodeName == "h1" {
				return fmt.Errorf("redis: %d ready pods off h1", len(pods))
			}
			web, _ := c.runningPods("name=web")
			for _, p := range web {
				if p.Spec.NodeName == "h1" {
					return fmt.Errorf("web pod %s still counted on h1", p.Name)
				}
			}
			return nil
		})
		c.t.Logf("pods running again on h0 and h2 %.1f s after h1 was tainted (%.1f s after it stopped)",
			time.Since(notReady).Seconds(), time.Since(stopAt).Seconds())
		c.eventually(30*time.Second, "the app answering through h0 and h2", func() error {
			for _, addr := range []string{nodeAddrs[0], nodeAddrs[2]} {
				if _, err := c.visit(addr, "/"); err != nil {
					return err
				}
			}
			return nil
		})
		ok, failures, _ := l.finish()
		c.t.Logf("while h1 was down: %d requests answered, %d failed (connections to h1's pods until it was declared lost)", ok, len(failures))
	})

	step("10-server-restart", func() {
		snap := c.snapshot()
		a, err := c.visit(nodeAddrs[0], "/")
		if err != nil {
			c.t.Fatal(err)
		}
		c.stop(h0)
		c.startServer()
		back := time.Now()
		for _, n := range []string{"h0", "h2"} {
			c.eventually(60*time.Second, n+"'s lease renewed after the restart", func() error { return c.leaseRenewedSince(n, back) })
		}
		c.eventually(60*time.Second, "h0 and h2 Ready", func() error { return c.nodesReady("h0", "h2") })
		after := c.snapshot()
		for key, v := range snap.objects {
			if after.objects[key] == "" {
				c.t.Errorf("%s is gone after the restart", key)
			} else if after.objects[key] != v {
				c.t.Errorf("%s changed across the restart: %s → %s", key, v, after.objects[key])
			}
		}
		for key, v := range snap.containers {
			if after.containers[key] != v {
				c.t.Errorf("container %s changed across the restart: %s → %s", key, v, after.containers[key])
			}
		}
		b, err := c.visit(nodeAddrs[0], "/")
		if err != nil {
			c.t.Fatal(err)
		}
		if b.visits <= a.visits {
			c.t.Errorf("visit counter %d after the restart, was %d", b.visits, a.visits)
		}
		c.t.Logf("%d objects and %d containers unchanged; counter %d → %d", len(snap.objects), len(snap.containers), a.visits, b.visits)
	})

	step("11-scale-down", func() {
		c.kubectl("scale", "deployment", "web-deployment", "--replicas=1")
		c.eventually(60*time.Second, "1 web pod", func() error { return c.webPods(1, "") })
		if _, err := c.visit(nodeAddrs[0], "/"); err != nil {
			c.t.Errorf("web-svc with one replica: %v", err)
		}
	})
}

// webPods is nil once n web pods are Ready (with image, when given) and no
// other web pod is left.
func (c *cluster) webPods(n int, image string) error {
	pods, err := c.runningPods("name=web")
	if err != nil {
		return err
	}
	all, err := c.kube.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "name=web"})
	if err != nil {
		return err
	}
	if len(pods) != n || len(all.Items) != n {
		return fmt.Errorf("%d ready web pods of %d, want %d", len(pods), len(all.Items), n)
	}
	for _, p := range pods {
		if image != "" && p.Spec.Containers[0].Image != image {
			return fmt.Errorf("pod %s runs %s", p.Name, p.Spec.Containers[0].Image)
		}
	}
	return nil
}

func podRunning(c *cluster, name string) error {
	p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s is %s", name, p.Status.Phase)
	}
	return nil
}

// snapshot is what must survive a server restart: every object's uid (and,
// for what no controller writes, its resourceVersion) and every running
// container's ID and restart count.
type snapshot struct {
	objects    map[string]string
	containers map[string]string
}

func (c *cluster) snapshot() snapshot {
	c.t.Helper()
	ctx := context.Background()
	s := snapshot{objects: map[string]string{}, containers: map[string]string{}}
	must := func(err error) {
		if err != nil {
			c.t.Fatalf("snapshot: %v", err)
		}
	}
	pods, err := c.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, p := range pods.Items {
		s.objects["pod "+p.Namespace+"/"+p.Name] = string(p.UID)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil {
				s.containers[p.Name+"/"+cs.Name] = fmt.Sprintf("%s restarts=%d", cs.ContainerID, cs.RestartCount)
			}
		}
	}
	deps, err := c.kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, d := range deps.Items {
		s.objects["deployment "+d.Namespace+"/"+d.Name] = string(d.UID) + " generation " + fmt.Sprint(d.Generation)
	}
	rss, err := c.kube.AppsV1().ReplicaSets("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, r := range rss.Items {
		s.objects["replicaset "+r.Namespace+"/"+r.Name] = string(r.UID)
	}
	svcs, err := c.kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, v := range svcs.Items {
		s.objects["service "+v.Namespace+"/"+v.Name] = string(v.UID) + " " + v.Spec.ClusterIP
	}
	cms, err := c.kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, v := range cms.Items {
		s.objects["configmap "+v.Namespace+"/"+v.Name] = string(v.UID) + " rv " + v.ResourceVersion
	}
	secs, err := c.kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	must(err)
	for _, v := range secs.Items {
		s.objects["secret "+v.Namespace+"/"+v.Name] = string(v.UID) + " rv " + v.ResourceVersion
	}
	nss, err := c.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	must(err)
	for _, v := range nss.Items {
		s.objects["namespace "+v.Name] = string(v.UID)
	}
	nodes, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	must(err)
	for _, v := range nodes.Items {
		s.objects["node "+v.Name] = string(v.UID)
	}
	return s
}

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimRight(l, "\r") == line {
			return true
		}
	}
	return false
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Written under a temporary name and renamed, as an operator copying
	// into a watched directory should.
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}
