package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/orch-dev/orch/internal/lab"
	"github.com/orch-dev/orch/internal/testimage"
)

var (
	orchOnce sync.Once
	orchPath string
	orchErr  error
)

// orchBinary builds the orch binary once per test run.
func orchBinary(t *testing.T) string {
	t.Helper()
	orchOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			orchErr = err
			return
		}
		dir, err := os.MkdirTemp("", "orch-bin-")
		if err != nil {
			orchErr = err
			return
		}
		p := filepath.Join(dir, "orch")
		cmd := exec.Command("go", "build", "-tags", "seccomp", "-o", p, ".")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			orchErr = fmt.Errorf("go build: %w: %s", err, out)
			return
		}
		orchPath = p
	})
	if orchErr != nil {
		t.Fatalf("orch: %v", orchErr)
	}
	return orchPath
}

const labImage = "docker.io/library/busybox:orchtest"

// labCluster is `orch server` (with its embedded node) on the lab's first
// host and `orch agent` on the second, each a process in its host's network
// namespace; kubectl runs on the lab's client host.
type labCluster struct {
	t       *testing.T
	lab     *lab.Lab
	bin     string
	kubectl string
	dir     string
	kubecfg string

	mu    sync.Mutex
	procs []*labProc
}

type labProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// cpImage is the test busybox with the applets kubectl cp and the test's
// pods run directly (tar, wc, httpd), as in upstream busybox images.
func cpImage() (v1.Image, error) {
	es, err := testimage.BusyboxEntries()
	if err != nil {
		return nil, err
	}
	for _, a := range []string{"tar", "wc", "httpd"} {
		es = append(es, testimage.Symlink("bin/"+a, "busybox"))
	}
	l, err := testimage.Layer(es, testimage.None)
	if err != nil {
		return nil, err
	}
	return testimage.Image(testimage.Platform(), testimage.BusyboxConfig(), l)
}

func newLabCluster(t *testing.T) *labCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("builds orch and kubectl, runs a two-node cluster")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	c := &labCluster{t: t, bin: orchBinary(t), kubectl: kubectlBinary(t), dir: t.TempDir()}
	c.lab = lab.New(t, 2)
	// Registered after the lab's host directories: runs before they are
	// removed and before the lab's namespaces go.
	t.Cleanup(c.teardown)
	img, err := cpImage()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range c.lab.Hosts {
		dir := filepath.Join(h.DataDir, "agent", "images")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, "busybox.tar"))
		if err != nil {
			t.Fatal(err)
		}
		if err := testimage.WriteDockerSave(f, testimage.None, testimage.Tagged{Image: img, Tags: []string{labImage}}); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	resolv := filepath.Join(c.dir, "resolv.conf")
	// Cluster DNS forwards to the client host, where nothing answers.
	if err := os.WriteFile(resolv, []byte("nameserver "+c.lab.Client.IP.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := c.lab.Hosts[0]
	admin := filepath.Join(c.dir, "admin.yaml")
	c.start(srv, "server", "--data-dir", srv.DataDir, "--node-name", srv.Role, "--write-kubeconfig", admin,
		"--cgroup-root", "/"+srv.CgroupRoot, "--resolv-conf", resolv)
	deadline := time.Now().Add(60 * time.Second)
	var tok []byte
	for {
		data, err := os.ReadFile(admin)
		if err == nil {
			tok, err = os.ReadFile(filepath.Join(srv.DataDir, "server", "token"))
		}
		if err == nil {
			data = regexp.MustCompile(`(?m)^(\s*server:\s*)https://\S+$`).ReplaceAll(data, []byte("${1}https://"+srv.IP.String()+":6443"))
			c.kubecfg = filepath.Join(c.dir, "client.yaml")
			if err := os.WriteFile(c.kubecfg, data, 0o600); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server wrote no kubeconfig: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ag := c.lab.Hosts[1]
	c.start(ag, "agent", "--server", "https://"+srv.IP.String()+":6443", "--token", strings.TrimSpace(string(tok)),
		"--data-dir", ag.DataDir, "--node-name", ag.Role, "--cgroup-root", "/"+ag.CgroupRoot, "--resolv-conf", resolv)
	c.eventually(90*time.Second, "both nodes Ready", func() error {
		out, err := c.run(nil, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "h0=True") || !strings.Contains(out, "h1=True") {
			return fmt.Errorf("nodes: %s", out)
		}
		return nil
	})
	return c
}

// start runs `orch args...` in h's network namespace, logging to the test
// directory.
func (c *labCluster) start(h *lab.Host, args ...string) {
	c.t.Helper()
	log, err := os.Create(filepath.Join(c.dir, h.Role+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.Path, "--", c.bin}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		c.t.Fatalf("start orch on %s: %v", h.Role, err)
	}
	p := &labProc{name: h.Role, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); log.Close(); close(p.done) }()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

// teardown deletes the pods (so the nodes unmount and remove what they
// made), stops every orch, and kills whatever is left in the hosts' cgroups.
func (c *labCluster) teardown() {
	if c.kubecfg != "" {
		if out, err := c.run(nil, "delete", "pods", "--all", "--wait", "--timeout=60s"); err != nil {
			c.t.Logf("delete pods: %v: %s", err, out)
		}
	}
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			c.t.Errorf("orch on %s ignored SIGTERM for 20 s; killed", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, h := range c.lab.Hosts {
		killCgroup(h.CgroupRoot)
		unmountUnder(c.t, h.DataDir)
	}
	if c.t.Failed() {
		for _, h := range c.lab.Hosts {
			if b, err := os.ReadFile(filepath.Join(c.dir, h.Role+".log")); err == nil {
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				c.t.Logf("orch on %s, end of log:\n%s", h.Role, b)
			}
		}
	}
}

// killCgroup kills every process left in cgroup name in any hierarchy.
func killCgroup(name string) {
	hier, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hier {
		root := filepath.Join("/sys/fs/cgroup", h.Name(), name)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// unmountUnder detaches mounts left below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mps[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mps[i], err)
		}
	}
}

// command returns kubectl args... on the client host; env adds variables.
func (c *labCluster) command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := c.lab.Client.Command(ctx, c.kubectl, append([]string{"--kubeconfig", c.kubecfg}, args...)...)
	cmd.Dir = c.dir
	cmd.Env = append(append(os.Environ(), "HOME="+c.dir, "KUBECACHEDIR="+filepath.Join(c.dir, "cache")), env...)
	return cmd
}

// run runs kubectl on the client host and returns its combined output.
func (c *labCluster) run(stdin []byte, args ...string) (string, error) {
	return c.runEnv(nil, stdin, args...)
}

func (c *labCluster) runEnv(env []string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := c.command(ctx, env, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *labCluster) ok(stdin []byte, args ...string) string {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *labCluster) eventually(timeout time.Duration, what string, cond func() error) {
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
		time.Sleep(200 * time.Millisecond)
	}
}

// clientDial connects from the lab's client host.
func (c *labCluster) clientDial(ctx context.Context, addr string) (net.Conn, error) {
	var conn net.Conn
	err := c.lab.Client.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// portForward is a running `kubectl port-forward`.
type portForward struct {
	cmd    *exec.Cmd
	local  int
	stderr *lockedBuffer
	done   chan struct{} // closed when kubectl has exited
	err    error         // kubectl's exit, once done is closed
	cancel context.CancelFunc
}

var forwardingLine = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> `)

// portForward starts kubectl port-forward target :remote and waits until
// it listens.
func (c *labCluster) portForward(env []string, target string, remote int) *portForward {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	// -v=4 logs which dialer (WebSocket tunnel or SPDY) connected.
	cmd := c.command(ctx, env, "-v=4", "port-forward", "--address", "127.0.0.1", target, ":"+strconv.Itoa(remote))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	pf := &portForward{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{}), cancel: cancel}
	cmd.Stderr = pf.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		c.t.Fatal(err)
	}
	c.t.Cleanup(pf.stop)
	ports := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := forwardingLine.FindStringSubmatch(sc.Text()); m != nil {
				p, _ := strconv.Atoi(m[1])
				select {
				case ports <- p:
				default:
				}
			}
		}
		pf.err = cmd.Wait()
		close(pf.done)
	}()
	select {
	case pf.local = <-ports:
		return pf
	case <-pf.done:
		c.t.Fatalf("kubectl port-forward %s exited: %v\n%s", target, pf.err, pf.stderr.String())
	case <-time.After(60 * time.Second):
		c.t.Fatalf("kubectl port-forward %s: no listener\n%s", target, pf.stderr.String())
	}
	return nil
}

func (pf *portForward) stop() {
	pf.cancel()
	<-pf.done
}

// get fetches path through the forwarded port, from the client host.
func (c *labCluster) get(pf *portForward, path string) (string, error) {
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return c.clientDial(ctx, addr) }}}
	resp, err := hc.Get("http://127.0.0.1:" + strconv.Itoa(pf.local) + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

const pfPods = `
apiVersion: v1
kind: Pod
metadata: {name: web-h0}
spec:
  nodeName: h0
  containers:
  - name: c
    image: ` + labImage + `
    command: ["sh", "-c", "mkdir -p /www && echo served-by-h0 > /www/index.html && exec httpd -f -h /www -p 127.0.0.1:8080"]
---
apiVersion: v1
kind: Pod
metadata: {name: web-h1}
spec:
  nodeName: h1
  containers:
  - name: c
    image: ` + labImage + `
    command: ["sh", "-c", "mkdir -p /www && echo served-by-h1 > /www/index.html && exec httpd -f -h /www -p 127.0.0.1:8080"]
`

// TestKubectlPortForwardAndCp runs upstream kubectl port-forward (over the
// WebSocket tunnel and over SPDY) and kubectl cp against pods on the
// server's embedded node and on a remote agent reached through the node
// tunnel.
func TestKubectlPortForwardAndCp(t *testing.T) {
	c := newLabCluster(t)
	c.ok([]byte(pfPods), "apply", "-f", "-")
	c.ok(nil, "wait", "--for=condition=Ready", "pod/web-h0", "pod/web-h1", "--timeout=90s")

	protocols := map[string][]string{"websocket": nil, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}}
	for _, node := range []string{"h0", "h1"} {
		for name, env := range protocols {
			pf := c.portForward(env, "pod/web-"+node, 8080)
			// Several requests, each a new forwarded connection.
			for i := 0; i < 3; i++ {
				body, err := c.get(pf, "/index.html")
				if err != nil || body != "served-by-"+node+"\n" {
					t.Fatalf("%s/%s: GET %d: %q %v\n%s", node, name, i, body, err, pf.stderr.String())
				}
			}
			pf.stop()
			// kubectl tries the WebSocket tunnel first and falls back to
			// SPDY when the upgrade fails: the first case must not fall back.
			log := pf.stderr.String()
			tunneled := strings.Contains(log, "Negotiation complete") && !strings.Contains(log, "fallback to secondary dialer")
			if tunneled != (name == "websocket") {
				t.Errorf("%s/%s: WebSocket tunnel used = %v:\n%s", node, name, tunneled, log)
			}
		}

		// A port nothing listens on: kubectl reports the node's error and
		// gives up; the node keeps forwarding.
		pf := c.portForward(nil, "pod/web-"+node, 9)
		if body, err := c.get(pf, "/"); err == nil {
			t.Errorf("%s: GET through a closed port answered %q", node, body)
		}
		select {
		case <-pf.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s: kubectl port-forward still running after the error", node)
		}
		if msg := pf.stderr.String(); !strings.Contains(msg, "error forwarding port 9 to pod") || !strings.Contains(msg, "connection refused") {
			t.Errorf("%s: kubectl's error output lacks the node's error:\n%s", node, msg)
		}
		pf = c.portForward(nil, "pod/web-"+node, 8080)
		if body, err := c.get(pf, "/index.html"); err != nil || body != "served-by-"+node+"\n" {
			t.Errorf("%s: after an error: %q %v", node, body, err)
		}
		pf.stop()

		// kubectl cp both ways (tar through exec, stdin and stdout).
		src := filepath.Join(c.dir, "payload-"+node)
		data := make([]byte, 300<<10)
		_, _ = rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c.ok(nil, "cp", src, "default/web-"+node+":/tmp/payload")
		if out := c.ok(nil, "exec", "web-"+node, "--", "wc", "-c", "/tmp/payload"); !strings.Contains(out, strconv.Itoa(len(data))) {
			t.Errorf("%s: copied file in the pod: %q", node, out)
		}
		back := filepath.Join(c.dir, "back-"+node)
		c.ok(nil, "cp", "default/web-"+node+":/tmp/payload", back)
		if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: copied back %d bytes, want %d (%v)", node, len(got), len(data), err)
		}
		// The same over SPDY, the exec protocol of clients without
		// WebSocket support.
		spdy := []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}
		if out, err := c.runEnv(spdy, nil, "exec", "web-"+node, "--", "sh", "-c", "echo out; echo err >&2; exit 7"); err == nil || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") || !strings.Contains(out, "exit code 7") {
			t.Errorf("%s: exec over SPDY: %v: %q", node, err, out)
		}
		backSPDY := filepath.Join(c.dir, "back-spdy-"+node)
		if out, err := c.runEnv(spdy, nil, "cp", "default/web-"+node+":/tmp/payload", backSPDY); err != nil {
			t.Errorf("%s: cp over SPDY: %v: %s", node, err, out)
		} else if got, err := os.ReadFile(backSPDY); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: copied back over SPDY %d bytes, want %d (%v)", node, len(got), len(data), err)
		}
		// A directory.
		c.ok(nil, "cp", "default/web-"+node+":/www", filepath.Join(c.dir, "www-"+node))
		if got, err := os.ReadFile(filepath.Join(c.dir, "www-"+node, "index.html")); err != nil || string(got) != "served-by-"+node+"\n" {
			t.Errorf("%s: copied directory: %q %v", node, got, err)
		}
	}
}
