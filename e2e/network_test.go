package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/orch-dev/orch/internal/lab"
)

// echoPods are one nettool server per node, each Ready while /tmp/ready
// exists, behind a ClusterIP (TCP and UDP), a NodePort, a LoadBalancer and a
// headless Service, with an ExternalName alias.
const echoPods = `
apiVersion: v1
kind: Pod
metadata: {name: echo-NODE, labels: {app: echo}}
spec:
  nodeSelector: {kubernetes.io/hostname: NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: nettool:e2e
    command: ["sh", "-c", "touch /tmp/ready && exec nettool serve"]
    ports:
    - {name: tcp-echo, containerPort: 8080}
    - {name: udp-echo, containerPort: 8081, protocol: UDP}
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
`

const echoServices = `
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: tcp-echo, port: 80, targetPort: tcp-echo}
  - {name: udp-echo, port: 81, targetPort: udp-echo, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: echo-np}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: v1
kind: Service
metadata: {name: echo-lb}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports:
  - {port: 8088, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: echo-headless}
spec:
  clusterIP: None
  selector: {app: echo}
  ports:
  - {name: tcp-echo, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: echo.default.svc.cluster.local
`

// TestClusterNetwork checks, on a three-node cluster of real orch
// processes, the lab must-shows of the pod network (issue 5), Services
// (issue 8) and cluster DNS (issue 9) as a user meets them: pods, nodes and
// an outside client talking through the cluster.
func TestClusterNetwork(t *testing.T) {
	bin, root, artifacts := e2eEnv(t)
	c := newCluster(t, bin, artifacts, 3)
	h0, h1, h2 := c.lab.Hosts[0], c.lab.Hosts[1], c.lab.Hosts[2]
	step := stepper(t, c)

	var pods map[string]corev1.Pod // by node
	var clusterIP string
	step("up", func() {
		c.deliverImages(root)
		c.up()
		var docs []string
		for _, h := range c.lab.Hosts {
			docs = append(docs, strings.ReplaceAll(echoPods, "NODE", h.Role))
		}
		docs = append(docs, echoServices)
		c.kubectlStdin(strings.Join(docs, "\n---\n"), "apply", "-f", "-")
		c.eventually(60*time.Second, "echo pods ready", func() error {
			ps, err := c.runningPods("app=echo")
			if err != nil {
				return err
			}
			if len(ps) != 3 {
				return fmt.Errorf("%d ready echo pods", len(ps))
			}
			pods = map[string]corev1.Pod{}
			for _, p := range ps {
				pods[p.Spec.NodeName] = p
			}
			return nil
		})
		svc, err := c.kube.CoreV1().Services("default").Get(context.Background(), "echo", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		clusterIP = svc.Spec.ClusterIP
	})

	step("pod-to-pod", func() {
		// Every pod reaches the pods on the other nodes, TCP and UDP.
		for _, from := range c.lab.Hosts {
			for _, to := range c.lab.Hosts {
				if from == to {
					continue
				}
				for _, proto := range []string{"tcp", "udp"} {
					port := map[string]string{"tcp": "8080", "udp": "8081"}[proto]
					out := c.kubectl("exec", pods[from.Role].Name, "--", "nettool", "dial", proto, net.JoinHostPort(pods[to.Role].Status.PodIP, port))
					if !strings.HasPrefix(out, pods[to.Role].Name+" ") {
						c.t.Errorf("%s → %s over %s: %q", pods[from.Role].Name, pods[to.Role].Name, proto, out)
					}
					// The pod sees the other pod's address, not a node's: no NAT inside the cluster.
					if src := strings.Fields(out); len(src) == 2 && !strings.HasPrefix(src[1], pods[from.Role].Status.PodIP+":") {
						c.t.Errorf("%s → %s over %s: seen from %s, want the pod IP %s", pods[from.Role].Name, pods[to.Role].Name, proto, src[1], pods[from.Role].Status.PodIP)
					}
				}
			}
		}
	})

	step("node-to-pod", func() {
		// Every node reaches every pod.
		for _, h := range c.lab.Hosts {
			for _, to := range c.lab.Hosts {
				out, err := dialFrom(h.NS, "tcp", net.JoinHostPort(pods[to.Role].Status.PodIP, "8080"))
				if err != nil || !strings.HasPrefix(out, pods[to.Role].Name+" ") {
					c.t.Errorf("node %s → pod %s: %q %v", h.Role, pods[to.Role].Name, out, err)
				}
			}
		}
		// Pods reach the nodes: a listener on each node answers its name.
		for _, h := range c.lab.Hosts {
			stop := listenOn(c.t, h.NS, net.JoinHostPort(h.IP.String(), "9999"), "node-"+h.Role)
			for _, from := range c.lab.Hosts {
				out := c.kubectl("exec", pods[from.Role].Name, "--", "nettool", "dial", "tcp", net.JoinHostPort(h.IP.String(), "9999"))
				if !strings.HasPrefix(out, "node-"+h.Role) {
					c.t.Errorf("pod %s → node %s: %q", pods[from.Role].Name, h.Role, out)
				}
			}
			stop()
		}
	})

	step("services", func() {
		want := []string{pods["h0"].Name, pods["h1"].Name, pods["h2"].Name}
		// From a pod: ClusterIP, TCP and UDP, reaches the pods of every node.
		for _, proto := range []string{"tcp", "udp"} {
			port := map[string]string{"tcp": "80", "udp": "81"}[proto]
			out := c.kubectl("exec", pods["h1"].Name, "--", "nettool", "dial", "-n", "40", proto, net.JoinHostPort(clusterIP, port))
			checkSpread(c.t, "pod → ClusterIP "+proto, out, want)
		}
		// From a node: ClusterIP, and the NodePort and LoadBalancer of
		// every node from the outside client.
		checkSpread(c.t, "node h2 → ClusterIP", dialN(c.t, h2.NS, "tcp", net.JoinHostPort(clusterIP, "80"), 40), want)
		checkSpread(c.t, "node h0 → ClusterIP udp", dialN(c.t, h0.NS, "udp", net.JoinHostPort(clusterIP, "81"), 40), want)
		for _, h := range c.lab.Hosts {
			checkSpread(c.t, "client → NodePort on "+h.Role, dialN(c.t, c.lab.Client.NS, "tcp", net.JoinHostPort(h.IP.String(), "30080"), 40), want)
			checkSpread(c.t, "client → LoadBalancer on "+h.Role, dialN(c.t, c.lab.Client.NS, "tcp", net.JoinHostPort(h.IP.String(), "8088"), 40), want)
		}
	})

	step("service-bad-input", func() {
		// A NodePort another Service holds is refused, as upstream.
		out, err := c.kubectlIn([]byte(`
apiVersion: v1
kind: Service
metadata: {name: clash}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
`), "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "provided port is already allocated") {
			c.t.Errorf("a taken NodePort: %v\n%s", err, out)
		}
		// A targetPort name no container has: no endpoints, and
		// connections are refused rather than black-holed.
		c.kubectlStdin(`
apiVersion: v1
kind: Service
metadata: {name: noport}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: no-such-port}]
`, "apply", "-f", "-")
		svc, err := c.kube.CoreV1().Services("default").Get(context.Background(), "noport", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		c.eventually(20*time.Second, "connections to noport refused", func() error {
			_, err := dialFrom(h0.NS, "tcp", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
			if err == nil || !strings.Contains(err.Error(), "refused") {
				return fmt.Errorf("dial: %v", err)
			}
			return nil
		})
		slices, err := c.kube.DiscoveryV1().EndpointSlices("default").List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=noport"})
		if err != nil {
			c.t.Fatal(err)
		}
		for _, sl := range slices.Items {
			if len(sl.Endpoints) > 0 {
				c.t.Errorf("noport has endpoints %v", sl.Endpoints)
			}
		}
	})

	step("dns", func() {
		pod := pods["h1"].Name
		lookup := func(typ, name string) string {
			out, err := c.kubectlErr("exec", pod, "--", "nettool", "lookup", "-type", typ, name)
			if err != nil {
				c.t.Errorf("lookup %s %s: %v\n%s", typ, name, err, out)
			}
			return strings.TrimSpace(out)
		}
		for _, name := range []string{"echo", "echo.default", "echo.default.svc", "echo.default.svc.cluster.local"} {
			if got := lookup("A", name); got != clusterIP {
				c.t.Errorf("%s = %q, want %s", name, got, clusterIP)
			}
		}
		if got := lookup("SRV", "_tcp-echo._tcp.echo.default.svc.cluster.local"); got != "echo.default.svc.cluster.local. 80" {
			c.t.Errorf("SRV _tcp-echo._tcp.echo = %q", got)
		}
		var ips []string
		for _, p := range pods {
			ips = append(ips, p.Status.PodIP)
		}
		sort.Strings(ips)
		if got := lookup("A", "echo-headless"); got != strings.Join(ips, "\n") {
			c.t.Errorf("headless echo-headless = %q, want the pod IPs %v", got, ips)
		}
		if got := lookup("CNAME", "ext.default.svc.cluster.local"); got != "echo.default.svc.cluster.local." {
			c.t.Errorf("ExternalName ext: CNAME %q", got)
		}
		if got := lookup("A", "ext"); got != clusterIP {
			c.t.Errorf("ExternalName ext → %q, want echo's %s", got, clusterIP)
		}
		if got := lookup("A", strings.TrimSuffix(upstreamName, ".")); got != upstreamIP {
			c.t.Errorf("upstream name forwarded: %q, want %s", got, upstreamIP)
		}
		if out, err := c.kubectlErr("exec", pod, "--", "nettool", "lookup", "no-such-service"); err == nil {
			c.t.Errorf("no-such-service resolved: %s", out)
		}
		// A new Service resolves from a pod within a second: a lookup
		// retries in the pod while the Service is created.
		cmd := c.kubectlCmd(context.Background(), nil, "exec", pod, "--", "nettool", "lookup", "-wait", "20s", "fresh")
		outc := make(chan string, 1)
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				out = append(out, []byte("error: "+err.Error())...)
			}
			outc <- string(out)
		}()
		time.Sleep(1500 * time.Millisecond) // the lookup loop is running
		created := time.Now()
		_, err := c.kube.CoreV1().Services("default").Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "fresh"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}, Selector: map[string]string{"app": "echo"}},
		}, metav1.CreateOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		out := <-outc
		var at int64
		if _, err := fmt.Sscanf(out, "found-at %d", &at); err != nil {
			c.t.Fatalf("lookup of the new Service: %q", out)
		}
		c.t.Logf("a new Service resolved from a pod %.0f ms after its create request was sent", float64(time.Unix(0, at).Sub(created).Microseconds())/1000)
	})

	step("unready-endpoint", func() {
		// A client on node h0 connects to the ClusterIP without pause; h2's
		// pod turns unready; from the moment its Ready condition is False
		// in the API, how long do new connections still reach it?
		victim := pods["h2"].Name
		type hit struct {
			at   time.Time
			host string
		}
		var mu sync.Mutex
		var hits []hit
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := dialFrom(h0.NS, "tcp", net.JoinHostPort(clusterIP, "80"))
				if err == nil {
					mu.Lock()
					hits = append(hits, hit{time.Now(), strings.Fields(out)[0]})
					mu.Unlock()
				}
			}
		}()
		w, err := c.kube.CoreV1().Pods("default").Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + victim})
		if err != nil {
			c.t.Fatal(err)
		}
		c.kubectl("exec", victim, "--", "rm", "/tmp/ready")
		var unready time.Time
		timeout := time.After(30 * time.Second)
		for unready.IsZero() {
			select {
			case ev := <-w.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok && !podReady(p) {
					unready = time.Now()
				}
			case <-timeout:
				c.t.Fatal("pod did not turn unready within 30 s")
			}
		}
		w.Stop()
		time.Sleep(3 * time.Second)
		close(stop)
		<-done
		var last time.Time
		counts := map[string]int{}
		for _, h := range hits {
			if h.host == victim && h.at.After(last) {
				last = h.at
			}
			if h.at.After(unready.Add(2 * time.Second)) {
				counts[h.host]++
			}
		}
		lag := last.Sub(unready)
		c.t.Logf("%d connections; the unready endpoint's last new connection %.0f ms after it turned unready in the API; answers from 2 s on: %v", len(hits), float64(lag.Microseconds())/1000, counts)
		if counts[victim] > 0 {
			c.t.Errorf("the unready pod still got %d new connections 2 s after it turned unready", counts[victim])
		}
		c.kubectl("exec", victim, "--", "touch", "/tmp/ready")
		c.eventually(20*time.Second, "pod ready again", func() error { return podIsReady(c, victim) })
	})

	step("udp-endpoint-moves", func() {
		// A UDP client keeps its source port while the Service's only
		// endpoint is replaced by a pod on another node.
		pod := func(name, node string) string {
			return strings.NewReplacer("NAME", name, "NODE", node).Replace(`
apiVersion: v1
kind: Pod
metadata: {name: NAME, labels: {app: udp1}}
spec:
  nodeSelector: {kubernetes.io/hostname: NODE}
  terminationGracePeriodSeconds: 0
  containers:
  - {name: echo, image: nettool:e2e, command: [nettool, serve]}
`)
		}
		c.kubectlStdin(pod("udp1-a", "h1")+"---\n"+`
apiVersion: v1
kind: Service
metadata: {name: udp1}
spec:
  selector: {app: udp1}
  ports:
  - {port: 53, targetPort: 8081, protocol: UDP}
`, "apply", "-f", "-")
		svc, err := c.kube.CoreV1().Services("default").Get(context.Background(), "udp1", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		addr := net.JoinHostPort(svc.Spec.ClusterIP, "53")
		const sport = 40053
		c.eventually(60*time.Second, "udp1-a answering", func() error {
			out, err := dialUDPFrom(h0.NS, addr, sport)
			if err != nil || !strings.HasPrefix(out, "udp1-a ") {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
		c.kubectl("delete", "pod", "udp1-a", "--grace-period=0", "--force")
		c.kubectlStdin(pod("udp1-b", "h2"), "apply", "-f", "-")
		moved := time.Now()
		c.eventually(30*time.Second, "udp1-b answering the same client port", func() error {
			out, err := dialUDPFrom(h0.NS, addr, sport)
			if err != nil || !strings.HasPrefix(out, "udp1-b ") {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
		c.t.Logf("UDP from the same source port answered by the moved endpoint %.1f s after the old pod was deleted", time.Since(moved).Seconds())
	})

	step("agent-restart", func() {
		before := c.snapshot()
		c.stop(h1)
		restarted := time.Now()
		c.startAgent(h1)
		// The new agent is back once it renewed h1's lease.
		c.eventually(60*time.Second, "h1's lease renewed by the new agent", func() error { return c.leaseRenewedSince("h1", restarted) })
		c.eventually(60*time.Second, "h1 Ready again", func() error { return c.nodesReady("h0", "h1", "h2") })
		// The node API of the new agent answers (kubectl exec goes through it).
		c.kubectl("exec", pods["h1"].Name, "--", "true")
		after := c.snapshot()
		for k, v := range before.containers {
			if after.containers[k] != v {
				c.t.Errorf("container %s changed across the agent restart: %s → %s", k, v, after.containers[k])
			}
		}
		out := c.kubectl("exec", pods["h0"].Name, "--", "nettool", "dial", "tcp", net.JoinHostPort(pods["h1"].Status.PodIP, "8080"))
		if !strings.HasPrefix(out, pods["h1"].Name+" ") {
			c.t.Errorf("h0's pod → h1's pod after the agent restart: %q", out)
		}
		// No pod IP is handed out twice.
		list, err := c.kube.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		seen := map[string]string{}
		for _, p := range list.Items {
			if p.Status.PodIP == "" || p.Spec.HostNetwork {
				continue
			}
			if other, dup := seen[p.Status.PodIP]; dup {
				c.t.Errorf("pods %s and %s share IP %s", other, p.Name, p.Status.PodIP)
			}
			seen[p.Status.PodIP] = p.Name
		}
	})

	step("node-leaves", func() {
		node, err := c.kube.CoreV1().Nodes().Get(context.Background(), "h2", metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
		if err != nil {
			c.t.Fatalf("h2's pod CIDR %q: %v", node.Spec.PodCIDR, err)
		}
		for _, h := range []*lab.Host{h0, h1} {
			if r, f := peerState(c.t, h, cidr, h2.IP); !r || !f {
				c.t.Fatalf("%s before h2 leaves: route to %s %v, FDB entry for %s %v", h.Role, cidr, r, h2.IP, f)
			}
		}
		c.powerOff(h2)
		c.kubectl("delete", "node", "h2")
		for _, h := range []*lab.Host{h0, h1} {
			c.eventually(20*time.Second, h.Role+" forgets h2", func() error {
				if r, f := peerState(c.t, h, cidr, h2.IP); r || f {
					return fmt.Errorf("route to %s %v, FDB entry for %s %v", cidr, r, h2.IP, f)
				}
				return nil
			})
		}
	})
}

// stepper runs named steps as subtests and logs their times, and a table
// of all of them when the test ends. When a step fails it logs the
// cluster's diagnostics and stops the test.
func stepper(t *testing.T, c *cluster) func(string, func()) {
	start := time.Now()
	var timings []string
	t.Cleanup(func() {
		t.Logf("step timings:\n  %s\n  %-22s %6.1f s", strings.Join(timings, "\n  "), "total", time.Since(start).Seconds())
	})
	return func(name string, fn func()) {
		t0 := time.Now()
		ok := t.Run(name, func(st *testing.T) {
			c.t = st
			fn()
		})
		c.t = t
		d := time.Since(t0)
		timings = append(timings, fmt.Sprintf("%-22s %6.1f s", name, d.Seconds()))
		t.Logf("step %s: %.1f s", name, d.Seconds())
		if !ok {
			t.Logf("step %s FAILED", name)
			c.diagnose()
			t.FailNow()
		}
	}
}

// leaseRenewedSince is nil once node's Lease was renewed after t.
func (c *cluster) leaseRenewedSince(node string, t time.Time) error {
	l, err := c.kube.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(t.Truncate(time.Microsecond)) {
		return fmt.Errorf("%s's lease renewed at %v, want after %v", node, l.Spec.RenewTime, t)
	}
	return nil
}

// kubectlStdin runs kubectl with body on its standard input.
func (c *cluster) kubectlStdin(body string, args ...string) string {
	c.t.Helper()
	out, err := c.kubectlIn([]byte(body), args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, cd := range p.Status.Conditions {
		if cd.Type == corev1.PodReady {
			return cd.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podIsReady(c *cluster, name string) error {
	p, err := c.kube.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !podReady(p) {
		return fmt.Errorf("pod %s not ready", name)
	}
	return nil
}

// dialFrom opens one connection from inside ns and returns the first line
// the server sends (for UDP, the answer to one datagram).
func dialFrom(ns lab.NS, network, addr string) (string, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout(network, addr, 2*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "udp" {
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			return "", err
		}
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// dialUDPFrom sends one datagram from a fixed source port inside ns.
func dialUDPFrom(ns lab.NS, addr string, sport int) (string, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{Port: sport}}
		var err error
		conn, err = d.Dial("udp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// dialN connects n times from ns and returns the answers, one a line.
func dialN(t *testing.T, ns lab.NS, network, addr string, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		out, err := dialFrom(ns, network, addr)
		if err != nil {
			t.Errorf("%s %s: %v", network, addr, err)
			continue
		}
		b.WriteString(out)
	}
	return b.String()
}

// checkSpread checks that the answers (one a line, the answering pod's
// name first) came from every one of want.
func checkSpread(t *testing.T, what, out string, want []string) {
	t.Helper()
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			got[f[0]]++
		}
	}
	for _, w := range want {
		if got[w] == 0 {
			t.Errorf("%s: no answer from %s (answers: %v)", what, w, got)
		}
	}
}

// listenOn answers every TCP connection to addr inside ns with text.
func listenOn(t *testing.T, ns lab.NS, addr, text string) (stop func()) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, text)
			c.Close()
		}
	}()
	return func() { ln.Close() }
}

// peerState reports whether host h has a route to cidr and a VXLAN FDB
// entry towards vtep (the pod network's state for one peer node).
func peerState(t *testing.T, h *lab.Host, cidr netip.Prefix, vtep netip.Addr) (route, fdb bool) {
	t.Helper()
	nh, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == cidr.String() {
			route = true
		}
	}
	link, err := nh.LinkByName("orch.1")
	if err != nil {
		t.Fatalf("%s: vxlan device: %v", h.Role, err)
	}
	neighs, err := nh.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP != nil && n.IP.String() == vtep.String() {
			fdb = true
		}
	}
	return route, fdb
}
