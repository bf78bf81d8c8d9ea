package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/orch-dev/orch/internal/lab"
)

// cluster is a real orch cluster in the lab: `orch server` on Hosts[0],
// `orch agent` on the others, each a separate process started inside its
// host's network namespace, with a log file in the artifacts directory.
// Users' commands (kubectl) and requests run from the lab's client host.
type cluster struct {
	t         *testing.T
	lab       *lab.Lab
	bin       string // the orch binary
	artifacts string // logs and the client's files
	kubecfg   string // admin kubeconfig pointing at the server's lab address
	kube      kubernetes.Interface
	httpc     *http.Client // requests from the client host, one connection each
	serverArg []string

	mu      sync.Mutex
	procs   map[string]*proc // by host role
	stopped map[string]bool
}

// proc is one running orch.
type proc struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// serverURL is where agents and the client reach the API server.
func (c *cluster) serverURL() string { return "https://" + c.lab.Hosts[0].IP.String() + ":6443" }

// newCluster builds the lab (n hosts and a client) and registers the
// teardown that kills every process the cluster started, detaches every
// mount its runtimes left and removes pod logs it wrote.
func newCluster(t *testing.T, bin, artifacts string, n int) *cluster {
	t.Helper()
	podLogsBefore := dirNames("/var/log/pods")
	l := lab.New(t, n)
	if err := l.SetDefaultGateway(); err != nil {
		t.Fatalf("lab: %v", err)
	}
	c := &cluster{t: t, lab: l, bin: bin, artifacts: artifacts, procs: map[string]*proc{}, stopped: map[string]bool{}}
	t.Cleanup(func() {
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for _, p := range procs {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		for _, h := range l.Hosts {
			if err := l.StopHost(h); err != nil {
				t.Errorf("stop %s: %v", h.Role, err)
			}
			if err := lab.UnmountUnder(h.DataDir); err != nil {
				t.Errorf("unmount under %s: %v", h.DataDir, err)
			}
		}
		for name := range dirNames("/var/log/pods") {
			if !podLogsBefore[name] {
				_ = os.RemoveAll(filepath.Join("/var/log/pods", name))
			}
		}
	})
	c.startUpstreamDNS()
	c.httpc = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext:       c.clientDial,
		DisableKeepAlives: true,
	}}
	return c
}

func dirNames(dir string) map[string]bool {
	m := map[string]bool{}
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		m[e.Name()] = true
	}
	return m
}

// clientDial opens a TCP connection from the client host.
func (c *cluster) clientDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := c.lab.Client.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// start runs `orch args...` inside host h's network namespace.
func (c *cluster) start(h *lab.Host, args ...string) {
	c.t.Helper()
	logPath := filepath.Join(c.artifacts, h.Role+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatalf("log file: %v", err)
	}
	fmt.Fprintf(f, "\n===== %s: orch %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.Path, "--", c.bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "ORCH_DATA_DIR="+h.DataDir)
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start orch on %s: %v", h.Role, err)
	}
	p := &proc{cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[h.Role] = p
	c.mu.Unlock()
}

// takeProc removes and returns the orch process of h (nil if none runs).
func (c *cluster) takeProc(h *lab.Host) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[h.Role]
	delete(c.procs, h.Role)
	return p
}

// stop ends the orch on h with SIGTERM (SIGKILL after 20 s) and waits.
func (c *cluster) stop(h *lab.Host) {
	c.t.Helper()
	p := c.takeProc(h)
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		c.t.Errorf("orch on %s did not stop within 20 s of SIGTERM; killed", h.Role)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startServer starts `orch server` on Hosts[0] and waits for /readyz.
func (c *cluster) startServer(extra ...string) {
	c.t.Helper()
	h := c.lab.Hosts[0]
	if c.serverArg == nil {
		resolv := filepath.Join(c.artifacts, "resolv.conf")
		// Upstream of cluster DNS: the stub resolver on the client host;
		// names outside the cluster never leave the lab.
		if err := os.WriteFile(resolv, []byte("nameserver "+c.lab.Client.IP.String()+"\n"), 0o644); err != nil {
			c.t.Fatal(err)
		}
		c.serverArg = append([]string{"server",
			"--data-dir", h.DataDir,
			"--node-name", h.Role,
			"--write-kubeconfig", filepath.Join(c.artifacts, "admin.yaml"),
			"--cgroup-root", "/" + h.CgroupRoot,
			"--resolv-conf", resolv,
		}, extra...)
	}
	c.start(h, c.serverArg...)
	c.waitReady(h)
}

// waitReady polls the server's /readyz from the client host until it
// answers ok; the admin kubeconfig is loaded as soon as the server wrote it.
func (c *cluster) waitReady(h *lab.Host) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		if c.kube == nil {
			if _, err := os.Stat(filepath.Join(c.artifacts, "admin.yaml")); err == nil {
				last = c.loadKubeconfig()
			}
		}
		if c.kube != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var body []byte
			body, last = c.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if last == nil && string(body) == "ok" {
				return
			}
		}
		c.mu.Lock()
		p := c.procs[h.Role]
		c.mu.Unlock()
		select {
		case <-p.done:
			c.t.Fatalf("orch on %s exited: %v (log: %s)", h.Role, p.err, filepath.Join(c.artifacts, h.Role+".log"))
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("server on %s not ready within 30 s: %v", h.Role, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var serverLine = regexp.MustCompile(`(?m)^(\s*server:\s*)https://\S+$`)

// loadKubeconfig copies the admin kubeconfig the server wrote, pointed at
// the server's lab address, for kubectl and client-go on the client host.
func (c *cluster) loadKubeconfig() error {
	data, err := os.ReadFile(filepath.Join(c.artifacts, "admin.yaml"))
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	data = serverLine.ReplaceAll(data, []byte("${1}"+c.serverURL()))
	kubecfg := filepath.Join(c.artifacts, "client.yaml")
	if err := os.WriteFile(kubecfg, data, 0o600); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubecfg)
	if err != nil {
		return fmt.Errorf("client kubeconfig: %w", err)
	}
	cfg.Dial = c.clientDial
	cfg.QPS, cfg.Burst = 100, 200
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.kubecfg, c.kube = kubecfg, kube
	return nil
}

// startAgent joins host h with the token the server wrote.
func (c *cluster) startAgent(h *lab.Host) {
	c.t.Helper()
	tok, err := os.ReadFile(filepath.Join(c.lab.Hosts[0].DataDir, "server", "token"))
	if err != nil {
		c.t.Fatalf("join token: %v", err)
	}
	c.start(h, "agent",
		"--server", c.serverURL(),
		"--token", strings.TrimSpace(string(tok)),
		"--data-dir", h.DataDir,
		"--node-name", h.Role,
		"--cgroup-root", "/"+h.CgroupRoot,
		"--resolv-conf", filepath.Join(c.artifacts, "resolv.conf"),
	)
}

// kubectl runs `orch kubectl args...` on the client host and returns its
// combined output; a failure fails the test with that output.
func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectlErr(args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) kubectlErr(args ...string) (string, error) {
	return c.kubectlIn(nil, args...)
}

func (c *cluster) kubectlIn(stdin []byte, args ...string) (string, error) {
	return c.kubectlRun(nil, stdin, args...)
}

// kubectlEnv runs kubectl with extra environment variables.
func (c *cluster) kubectlEnv(env []string, args ...string) (string, error) {
	return c.kubectlRun(env, nil, args...)
}

// kubectlRun runs kubectl to completion (2 minutes at most) and returns its
// combined output.
func (c *cluster) kubectlRun(env []string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.kubectlCmd(ctx, env, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlCmd is `orch kubectl args...` on the client host, with the
// client kubeconfig and env added to the environment. The embedded kubectl
// unpacks itself once, under ORCH_DATA_DIR.
func (c *cluster) kubectlCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := c.lab.Client.Command(ctx, c.bin, append([]string{"kubectl", "--kubeconfig", c.kubecfg}, args...)...)
	cmd.Env = append(append(os.Environ(), "ORCH_DATA_DIR="+filepath.Join(c.artifacts, "kubectl"), "KUBECONFIG="+c.kubecfg), env...)
	return cmd
}

// powerOff switches host h off as a machine failure would: its orch and
// every process of its pods are killed and its network namespace deleted.
func (c *cluster) powerOff(h *lab.Host) {
	c.t.Helper()
	p := c.takeProc(h)
	if err := c.lab.StopHost(h); err != nil {
		c.t.Fatalf("stop %s: %v", h.Role, err)
	}
	if p != nil {
		<-p.done
	}
}

// get fetches http://addr/path from the client host.
func (c *cluster) get(addr, path string) (string, error) {
	resp, err := c.httpc.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return b.String(), fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(b.String()))
	}
	return b.String(), nil
}

// eventually polls cond every 100 ms until it returns nil or timeout
// passes; the last error fails the test.
func (c *cluster) eventually(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodesReady is nil once exactly the named nodes exist and are Ready.
func (c *cluster) nodesReady(names ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nodes, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, n := range nodes.Items {
		for _, cd := range n.Status.Conditions {
			if cd.Type == corev1.NodeReady && cd.Status == corev1.ConditionTrue {
				ready[n.Name] = true
			}
		}
	}
	for _, n := range names {
		if !ready[n] {
			return fmt.Errorf("node %s not Ready (ready: %v)", n, ready)
		}
	}
	return nil
}

// runningPods lists the Running, Ready pods matching selector in default.
func (c *cluster) runningPods(selector string) ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, cd := range p.Status.Conditions {
			if cd.Type == corev1.PodReady && cd.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// diagnose writes what a user would look at when a step fails: every
// orch's log (tail), and kubectl's view of the cluster.
func (c *cluster) diagnose() {
	c.t.Helper()
	if c.kubecfg != "" {
		for _, args := range [][]string{
			{"get", "nodes,pods,svc,endpoints,deploy,rs", "-A", "-o", "wide"},
			{"describe", "nodes"},
			{"describe", "pods", "-A"},
			{"describe", "deploy", "-A"},
			{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		} {
			out, err := c.kubectlErr(args...)
			c.t.Logf("--- kubectl %s (err %v)\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, h := range c.lab.Hosts {
		data, err := os.ReadFile(filepath.Join(c.artifacts, h.Role+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(string(data), "\n")
		if len(lines) > 150 {
			lines = lines[len(lines)-150:]
		}
		c.t.Logf("--- last lines of %s.log (full log: %s)\n%s", h.Role, filepath.Join(c.artifacts, h.Role+".log"), strings.Join(lines, "\n"))
	}
}

// upstreamName is the one name the lab's upstream resolver knows.
const (
	upstreamName = "upstream.example."
	upstreamIP   = "192.0.2.10"
)

// startUpstreamDNS serves the cluster DNS's upstream on the client host
// (the address every orch's --resolv-conf names): upstreamName has an A
// record, every other name is NXDOMAIN. Nothing leaves the lab.
func (c *cluster) startUpstreamDNS() {
	c.t.Helper()
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && strings.EqualFold(r.Question[0].Name, upstreamName) && r.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(upstreamName + " 30 IN A " + upstreamIP)
			m.Answer = append(m.Answer, rr)
		} else {
			m.SetRcode(r, mdns.RcodeNameError)
		}
		_ = w.WriteMsg(m)
	})
	addr := net.JoinHostPort(c.lab.Client.IP.String(), "53")
	var pc net.PacketConn
	var ln net.Listener
	err := c.lab.Client.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		c.t.Fatalf("upstream DNS on the client host: %v", err)
	}
	udp := &mdns.Server{PacketConn: pc, Handler: handler}
	tcp := &mdns.Server{Listener: ln, Handler: handler}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	c.t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
}

// e2eEnv returns the orch binary under test (ORCH_E2E_BIN), the module root
// and a fresh artifacts directory (under ORCH_E2E_ARTIFACTS when set), or
// skips the test when it cannot run here.
func e2eEnv(t *testing.T) (bin, root, artifacts string) {
	t.Helper()
	bin = os.Getenv("ORCH_E2E_BIN")
	if bin == "" {
		t.Skip("ORCH_E2E_BIN is not set (run `make e2e`)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	var err error
	if bin, err = filepath.Abs(bin); err != nil {
		t.Fatal(err)
	}
	if root, err = filepath.Abs(".."); err != nil {
		t.Fatal(err)
	}
	artifacts = os.Getenv("ORCH_E2E_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else {
		artifacts = filepath.Join(artifacts, t.Name()+"-"+time.Now().Format("20060102-150405.000"))
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("logs and client files in %s", artifacts)
	return bin, root, artifacts
}

// deliverImages builds the test images and puts their archives into every
// node's drop-in image directory before orch starts (air-gapped nodes).
func (c *cluster) deliverImages(root string) {
	c.t.Helper()
	imgDir := filepath.Join(c.artifacts, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	archives, err := buildImages(root, imgDir)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, h := range c.lab.Hosts {
		dst := filepath.Join(h.DataDir, "agent", "images")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			c.t.Fatal(err)
		}
		for _, a := range archives {
			copyFile(c.t, a, filepath.Join(dst, filepath.Base(a)))
		}
	}
}

// up starts the server on Hosts[0] and joins every other host as an agent,
// then waits for all nodes to be Ready.
func (c *cluster) up(serverExtra ...string) {
	c.t.Helper()
	c.startServer(serverExtra...)
	var names []string
	for i, h := range c.lab.Hosts {
		if i > 0 {
			c.startAgent(h)
		}
		names = append(names, h.Role)
	}
	c.eventually(60*time.Second, "all nodes Ready", func() error { return c.nodesReady(names...) })
	c.t.Logf("kubectl get nodes -o wide:\n%s", c.kubectl("get", "nodes", "-o", "wide"))
}
