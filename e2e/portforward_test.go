package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/internal/syncbuf"
)

// pfPods serve a page on their own 127.0.0.1 only, one on the server's
// embedded node (h0) and one on an agent (h1).
const pfPods = `
apiVersion: v1
kind: Pod
metadata: {name: web-h0}
spec:
  nodeName: h0
  containers:
  - name: c
    image: busybox:stable
    command: ["sh", "-c", "mkdir -p /www && echo served-by-h0 > /www/index.html && exec httpd -f -h /www -p 127.0.0.1:8080"]
---
apiVersion: v1
kind: Pod
metadata: {name: web-h1}
spec:
  nodeName: h1
  containers:
  - name: c
    image: busybox:stable
    command: ["sh", "-c", "mkdir -p /www && echo served-by-h1 > /www/index.html && exec httpd -f -h /www -p 127.0.0.1:8080"]
`

// TestKubectlPortForwardAndCp runs kubectl port-forward (over the WebSocket
// tunnel and over SPDY) and kubectl cp/exec (over both) against pods on the
// server's embedded node and on a remote agent reached through the node
// tunnel.
func TestKubectlPortForwardAndCp(t *testing.T) {
	bin, root, artifacts := e2eEnv(t)
	c := newCluster(t, bin, artifacts, 2)
	step := stepper(t, c)
	step("up", func() {
		c.deliverImages(root)
		c.up()
		c.kubectlStdin(pfPods, "apply", "-f", "-")
		c.kubectl("wait", "--for=condition=Ready", "pod/web-h0", "pod/web-h1", "--timeout=90s")
	})
	for _, node := range []string{"h0", "h1"} {
		step("port-forward-"+node, func() {
			protocols := []struct {
				name string
				env  []string
			}{{"websocket", nil}, {"spdy", []string{"KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}}}
			for _, p := range protocols {
				pf := c.portForward(p.env, "pod/web-"+node, 8080)
				// Several requests, each a new forwarded connection.
				for i := 0; i < 3; i++ {
					body, err := c.getForwarded(pf, "/index.html")
					if err != nil || body != "served-by-"+node+"\n" {
						c.t.Fatalf("%s: GET %d: %q %v\n%s", p.name, i, body, err, pf.stderr.String())
					}
				}
				pf.stop()
				// kubectl tries the WebSocket tunnel first and falls back to
				// SPDY when the upgrade fails: the first case must not fall back.
				log := pf.stderr.String()
				tunneled := strings.Contains(log, "Negotiation complete") && !strings.Contains(log, "fallback to secondary dialer")
				if tunneled != (p.name == "websocket") {
					c.t.Errorf("%s: WebSocket tunnel used = %v:\n%s", p.name, tunneled, log)
				}
			}
			// A port nothing listens on: kubectl reports the node's error and
			// gives up; the node keeps forwarding.
			pf := c.portForward(nil, "pod/web-"+node, 9)
			if body, err := c.getForwarded(pf, "/"); err == nil {
				c.t.Errorf("GET through a closed port answered %q", body)
			}
			select {
			case <-pf.done:
			case <-time.After(30 * time.Second):
				c.t.Errorf("kubectl port-forward still running after the error")
			}
			if msg := pf.stderr.String(); !strings.Contains(msg, "error forwarding port 9 to pod") || !strings.Contains(msg, "connection refused") {
				c.t.Errorf("kubectl's error output lacks the node's error:\n%s", msg)
			}
			pf = c.portForward(nil, "pod/web-"+node, 8080)
			if body, err := c.getForwarded(pf, "/index.html"); err != nil || body != "served-by-"+node+"\n" {
				c.t.Errorf("after an error: %q %v", body, err)
			}
			pf.stop()
		})
		step("cp-exec-"+node, func() {
			// kubectl cp both ways (tar through exec, stdin and stdout).
			src := filepath.Join(c.artifacts, "payload-"+node)
			data := make([]byte, 300<<10)
			_, _ = rand.Read(data)
			if err := os.WriteFile(src, data, 0o644); err != nil {
				c.t.Fatal(err)
			}
			c.kubectl("cp", src, "default/web-"+node+":/tmp/payload")
			if out := c.kubectl("exec", "web-"+node, "--", "wc", "-c", "/tmp/payload"); !strings.Contains(out, strconv.Itoa(len(data))) {
				c.t.Errorf("copied file in the pod: %q", out)
			}
			back := filepath.Join(c.artifacts, "back-"+node)
			c.kubectl("cp", "default/web-"+node+":/tmp/payload", back)
			if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
				c.t.Errorf("copied back %d bytes, want %d (%v)", len(got), len(data), err)
			}
			// The same over SPDY, the exec protocol of clients without
			// WebSocket support.
			spdy := []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}
			if out, err := c.kubectlEnv(spdy, "exec", "web-"+node, "--", "sh", "-c", "echo out; echo err >&2; exit 7"); err == nil || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") || !strings.Contains(out, "exit code 7") {
				c.t.Errorf("exec over SPDY: %v: %q", err, out)
			}
			backSPDY := filepath.Join(c.artifacts, "back-spdy-"+node)
			if out, err := c.kubectlEnv(spdy, "cp", "default/web-"+node+":/tmp/payload", backSPDY); err != nil {
				c.t.Errorf("cp over SPDY: %v: %s", err, out)
			} else if got, err := os.ReadFile(backSPDY); err != nil || !bytes.Equal(got, data) {
				c.t.Errorf("copied back over SPDY %d bytes, want %d (%v)", len(got), len(data), err)
			}
			// A directory.
			c.kubectl("cp", "default/web-"+node+":/www", filepath.Join(c.artifacts, "www-"+node))
			if got, err := os.ReadFile(filepath.Join(c.artifacts, "www-"+node, "index.html")); err != nil || string(got) != "served-by-"+node+"\n" {
				c.t.Errorf("copied directory: %q %v", got, err)
			}
		})
	}
}

// portForward is a running `kubectl port-forward` on the client host.
type portForward struct {
	cmd    *exec.Cmd
	local  int
	stderr *syncbuf.Buffer
	done   chan struct{} // closed when kubectl has exited
	err    error         // kubectl's exit, once done is closed
	cancel context.CancelFunc
}

var forwardingLine = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> `)

// portForward starts kubectl port-forward target :remote on the client
// host and waits until it listens.
func (c *cluster) portForward(env []string, target string, remote int) *portForward {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	// -v=4 logs which dialer (WebSocket tunnel or SPDY) connected.
	cmd := c.kubectlCmd(ctx, env, "-v=4", "port-forward", "--address", "127.0.0.1", target, ":"+strconv.Itoa(remote))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	pf := &portForward{cmd: cmd, stderr: &syncbuf.Buffer{}, done: make(chan struct{}), cancel: cancel}
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

// getForwarded fetches path through the forwarded port, from the client host.
func (c *cluster) getForwarded(pf *portForward, path string) (string, error) {
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.clientDial(ctx, network, addr)
		}}}
	resp, err := hc.Get("http://127.0.0.1:" + strconv.Itoa(pf.local) + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
