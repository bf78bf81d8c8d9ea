package agent

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/runtime"
	"github.com/orch-dev/orch/runtime/image"
)

// BenchmarkPodStartup creates 100 pods at 10/s on one node (image
// present) and reports the create → Running latency's p50 and p99
// (ORCHTEST_PODS and ORCHTEST_INTERVAL change the count and pace). As
// orch's containers do, they start with the small init
// (runtime/internal/initbin, built here unless ORCHTEST_INIT_BINARY names
// one; ORCHTEST_INIT_BINARY=none re-executes the test binary instead).
func BenchmarkPodStartup(b *testing.B) {
	if os.Getenv("ORCHTEST_INIT_BINARY") == "" {
		out := filepath.Join(b.TempDir(), "orch-init")
		cmd := exec.Command("go", "build", "-tags", "seccomp", "-o", out, "github.com/orch-dev/orch/runtime/internal/initbin")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build the small init (or set ORCHTEST_INIT_BINARY): %v\n%s", err, msg)
		}
		b.Setenv("ORCHTEST_INIT_BINARY", out)
	}
	for range b.N {
		benchPodStartup(b)
	}
}

func benchPodStartup(b *testing.B) {
	var stepsMu sync.Mutex
	steps := map[string]time.Duration{}
	firstSync := map[string]time.Time{}
	h := newHarnessHook(b, nil, func(p *corev1.Pod, step string, d time.Duration) {
		stepsMu.Lock()
		defer stepsMu.Unlock()
		steps[step] += d
		if _, ok := firstSync[p.Name]; !ok && step == "sync: begin" {
			firstSync[p.Name] = time.Now()
		}
	})
	ctx := context.Background()
	// Pod startup is measured on a node that is up: registered, Ready and
	// with its pod network (as upstream's SLO measures it).
	h.waitNodeReady(30 * time.Second)
	nodeReady := time.Since(h.agentStarted)
	w, err := h.client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	n, interval := 100, 100*time.Millisecond
	if v, err := strconv.Atoi(os.Getenv("ORCHTEST_PODS")); err == nil && v > 0 {
		n = v
	}
	if v, err := time.ParseDuration(os.Getenv("ORCHTEST_INTERVAL")); err == nil && v > 0 {
		interval = v
	}
	created := make(map[string]time.Time, n)
	running := make(map[string]time.Time, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.Status.Phase != corev1.PodRunning {
				continue
			}
			if _, seen := running[p.Name]; !seen {
				running[p.Name] = time.Now()
				if len(running) == n {
					return
				}
			}
		}
	}()
	b.ResetTimer()
	cpu0 := processCPU()
	tick := time.NewTicker(interval)
	createdAt := make([]time.Time, n)
	for i := range n {
		<-tick.C
		name := fmt.Sprintf("p%03d", i)
		createdAt[i] = time.Now()
		if _, err := h.client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: h.node, TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: "c", Image: testImage, Command: []string{"sleep", "3600"}}}}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	tick.Stop()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		b.Fatalf("only %d of %d pods Running", len(running), n)
	}
	b.StopTimer()
	// CPU: this process (API server, agent, runtime), the children it
	// reaped (nsexec stages) and the containers' processes (their inits'
	// time before they became the container's command).
	cpu := processCPU() - cpu0
	for _, st := range h.rt.ListContainers() {
		cpu += pidCPU(st.Pid)
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n), "cpu-ms/pod")
	b.ReportMetric(float64(nodeReady.Milliseconds()), "node-ready-ms")
	for i := range n {
		created[fmt.Sprintf("p%03d", i)] = createdAt[i]
	}
	lat := make([]time.Duration, 0, n)
	for name, t0 := range created {
		lat = append(lat, running[name].Sub(t0))
	}
	slices.Sort(lat)
	stepsMu.Lock()
	defer stepsMu.Unlock()
	if os.Getenv("ORCHTEST_LATENCIES") != "" {
		for i := range n {
			name := fmt.Sprintf("p%03d", i)
			fmt.Fprintf(os.Stderr, "%s %v (first sync after %v)\n", name, running[name].Sub(created[name]), firstSync[name].Sub(created[name]))
		}
	}
	if testing.Verbose() {
		var queued time.Duration
		for name, t := range firstSync {
			queued += t.Sub(created[name])
		}
		b.Logf("%-32s %8.2f ms/pod", "create to first sync", float64(queued.Microseconds())/1000/float64(len(firstSync)))
		for _, name := range slices.Sorted(maps.Keys(steps)) {
			b.Logf("%-32s %8.2f ms/pod", name, float64(steps[name].Microseconds())/1000/float64(n))
		}
	}
	b.ReportMetric(float64(percentile(lat, 50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(percentile(lat, 99).Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[n-1].Milliseconds()), "max-ms")
}

// processCPU is the user and system time of this process and of the
// children it reaped.
func processCPU() time.Duration {
	var self, children unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	var d time.Duration
	for _, tv := range []unix.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		d += time.Duration(tv.Nano())
	}
	return d
}

// pidCPU is the user and system time of a process so far (0 if gone).
func pidCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// percentile is the nearest-rank percentile p of sorted durations (p99 of
// 100 is the 99th smallest, not the largest).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(i, 0)]
}

// waitNodeReady waits until the harness's node is Ready with a pod CIDR
// and its agent has the pod network.
func (h *harness) waitNodeReady(timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, err := h.client.CoreV1().Nodes().Get(context.Background(), h.node, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" && h.agent.network() != nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("node %s not ready after %v", h.node, timeout)
}

// newBenchHarness is newHarness for benchmarks (the harness only needs
// Helper, Fatal, Cleanup, TempDir, Skip and Errorf).
func newBenchHarness(b *testing.B) *harness {
	return newHarnessCfg(b, nil)
}

// procStatus reads kB fields of /proc/<pid>/status.
func procStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 2 && fs[1] == "kB" {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			out[k] = n << 10
		}
	}
	return out
}

func ioWriteBytes() int64 { return procWriteBytes("self") }

// procWriteBytes is write_bytes of /proc/<pid>/io: what the process sent
// to the block layer.
func procWriteBytes(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// childAgentEnv makes the test binary run only an agent (see TestMain).
const childAgentEnv = "ORCHTEST_AGENT_CHILD"

// runChildAgent is the child side: an agent with default timings against
// the parent's API server, until killed.
func runChildAgent() int {
	host, node, dir := os.Getenv("ORCHTEST_API"), os.Getenv("ORCHTEST_NODE"), os.Getenv("ORCHTEST_DIR")
	log := discardLog()
	client, err := kube.NewForConfig(&rest.Config{Host: host, QPS: 50, Burst: 100})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rt, err := runtime.New(runtime.Config{StateDir: filepath.Join(dir, "agent"), LogDir: filepath.Join(dir, "logs"), CgroupRoot: os.Getenv("ORCHTEST_CGROUP")}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	store, err := image.Open(image.Config{Root: filepath.Join(dir, "images")}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	a, err := New(Config{NodeName: node, NodeIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, DataDir: dir},
		client, Deps{Runtime: rt, Images: store}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// BenchmarkIdleNode runs an agent as its own process (default timings:
// lease every 10s, status every 10s, reported at most every 5m) against
// this process's API server and store, lets it settle, then reports the
// agent's memory and the bytes this (server) process and the agent write
// to disk per minute while the node is idle. ORCHTEST_IDLE_WINDOW sets the window
// (default 60s).
func BenchmarkIdleNode(b *testing.B) {
	for range b.N {
		h := newBenchHarness(b)
		h.stop() // the in-process agent is not the one measured
		h.stop = nil
		node := "orchtest-idle-" + randHex(3)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childAgentEnv+"=1", "ORCHTEST_API="+h.api.HTTP.URL, "ORCHTEST_NODE="+node,
			"ORCHTEST_DIR="+filepath.Join(h.base, "child"), "ORCHTEST_CGROUP="+h.cgroot+"-child", "GOGC=50")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var killOnce sync.Once
		kill := func() {
			killOnce.Do(func() {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
			})
		}
		defer kill()
		h.atTeardown = append([]func(){kill}, h.atTeardown...)
		window := 60 * time.Second
		if v := os.Getenv("ORCHTEST_IDLE_WINDOW"); v != "" {
			window, _ = time.ParseDuration(v)
		}
		// Settle: registration, first status, lease.
		time.Sleep(15 * time.Second)
		if _, err := h.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(context.Background(), node, metav1.GetOptions{}); err != nil {
			b.Fatalf("child agent did not register: %v", err)
		}
		var writes atomic.Int64
		wctx, wcancel := context.WithCancel(context.Background())
		for _, w := range []func() (watch.Interface, error){
			func() (watch.Interface, error) { return h.client.CoreV1().Nodes().Watch(wctx, metav1.ListOptions{}) },
			func() (watch.Interface, error) {
				return h.client.CoordinationV1().Leases("").Watch(wctx, metav1.ListOptions{})
			},
			func() (watch.Interface, error) { return h.client.CoreV1().Events("").Watch(wctx, metav1.ListOptions{}) },
		} {
			wi, err := w()
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				for range wi.ResultChan() {
					writes.Add(1)
				}
			}()
			defer wi.Stop()
		}
		time.Sleep(time.Second) // the watches' initial events
		writes.Store(0)
		child := strconv.Itoa(cmd.Process.Pid)
		w0, a0 := ioWriteBytes(), procWriteBytes(child)
		time.Sleep(window)
		w1, a1 := ioWriteBytes(), procWriteBytes(child)
		n := writes.Load()
		wcancel()
		st := procStatus(cmd.Process.Pid)
		b.ReportMetric(float64(w1-w0)/window.Minutes()/1024, "server-disk-kB/min")
		b.ReportMetric(float64(a1-a0)/window.Minutes()/1024, "agent-disk-kB/min")
		b.ReportMetric(float64(n)/window.Minutes(), "api-writes/min")
		b.ReportMetric(float64(st["RssAnon"])/(1<<20), "agent-anon-MB")
		b.ReportMetric(float64(st["VmRSS"])/(1<<20), "agent-rss-MB")
	}
}
