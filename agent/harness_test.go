package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	cgmanager "github.com/opencontainers/cgroups/manager"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/syncbuf"
	"github.com/orch-dev/orch/internal/testimage"
	"github.com/orch-dev/orch/runtime"
	"github.com/orch-dev/orch/runtime/image"
	"github.com/orch-dev/orch/server/controller/nodeipam"
)

func TestMain(m *testing.M) {
	runtime.MaybeInit()
	if os.Getenv(childAgentEnv) != "" {
		os.Exit(runChildAgent())
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "%v: removing what the running tests made\n", sig)
		liveHarnesses.teardownAll()
		os.Exit(130)
	}()
	os.Exit(m.Run())
}

// liveHarnesses are the harnesses not yet cleaned up. An interrupted test
// binary runs no t.Cleanup, and a harness leaves containers (which
// outlive this process), mounts and cgroups: TestMain tears these down
// when SIGINT or SIGTERM comes.
var liveHarnesses = &harnessSet{live: map[*harness]struct{}{}}

type harnessSet struct {
	mu   sync.Mutex
	live map[*harness]struct{}
}

func (s *harnessSet) add(h *harness) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[h] = struct{}{}
}

func (s *harnessSet) remove(h *harness) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, h)
}

func (s *harnessSet) teardownAll() {
	s.mu.Lock()
	hs := make([]*harness, 0, len(s.live))
	for h := range s.live {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clean := true
			h.teardown(func(format string, args ...any) {
				clean = false
				fmt.Fprintf(os.Stderr, format+"\n", args...)
			})
			if !clean {
				return // something may still be mounted below: leave the files
			}
			// The test's temporary dirs (the harness's and the API server's).
			if dir := filepath.Dir(h.base); strings.HasPrefix(dir, os.TempDir()+"/") {
				if err := os.RemoveAll(dir); err != nil {
					fmt.Fprintf(os.Stderr, "remove %s: %v\n", dir, err)
				}
			}
		}()
	}
	wg.Wait()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// loNetwork is the tests' pod network: it puts the pod's address on the
// pod's own loopback (10.x addresses from the pod CIDR), so the pod has a
// real address without the test touching the host's interfaces.
type loNetwork struct {
	mu   sync.Mutex
	cidr netip.Prefix
	next netip.Addr
	ips  map[string]netip.Addr
}

func (n *loNetwork) Setup(_ context.Context, uid, nsPath string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ip, ok := n.ips[uid]; ok {
		return []netip.Addr{ip}, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	n.next = n.next.Next()
	ip := n.next
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(ip.AsSlice())}); err != nil {
		return nil, err
	}
	n.ips[uid] = ip
	return []netip.Addr{ip}, nil
}

func (n *loNetwork) Teardown(_ context.Context, uid, _ string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.ips, uid)
	return nil
}

const testImage = "docker.io/library/busybox:orchtest"

type harness struct {
	t      testing.TB
	api    *apitest.Server
	client kube.Interface
	rt     *runtime.Runtime
	images *image.Store
	base   string
	node   string
	cgroot string
	cfg    Config
	agent  *Agent
	stop   func()
	// atTeardown run first at teardown (e.g. killing child processes).
	atTeardown []func()
	// agentStarted is when startAgent last ran the agent.
	agentStarted time.Time
	// stepHook is the agents' step hook.
	stepHook func(*corev1.Pod, string, time.Duration)
	// teardownOnce makes the test's Cleanup and an interrupt tear down once.
	teardownOnce sync.Once
}

// newHarness starts an API server, the node IPAM controller and an agent
// on a real runtime with its own state dir and cgroup root.
func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	return newHarnessCfg(t, mutate)
}

func newHarnessCfg(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	return newHarnessHook(t, mutate, nil)
}

// newHarnessHook is newHarnessCfg with the agent's step hook set.
func newHarnessHook(t testing.TB, mutate func(*Config), stepHook func(*corev1.Pod, string, time.Duration)) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	h := &harness{t: t, api: apitest.Start(t), base: t.TempDir(), node: "orchtest-" + randHex(3), cgroot: "/orchtest-agent-" + randHex(4),
		stepHook: stepHook}
	h.client = h.api.Kube
	log := discardLog()
	if os.Getenv("ORCHTEST_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	rt, err := runtime.New(runtime.Config{StateDir: filepath.Join(h.base, "agent"), LogDir: filepath.Join(h.base, "logs"), CgroupRoot: h.cgroot,
		InitBinary: testInitBinary(t)}, log)
	if err != nil {
		t.Fatal(err)
	}
	h.rt = rt
	liveHarnesses.add(h)
	t.Cleanup(h.cleanup)
	h.images, err = image.Open(image.Config{Root: filepath.Join(h.base, "images")}, log)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Busybox(testimage.None)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := testimage.WriteDockerSave(&buf, testimage.None, testimage.Tagged{Image: img, Tags: []string{testImage}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.images.Import(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(h.base, "resolv.conf")
	hosts := filepath.Join(h.base, "hosts")
	_ = os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch example.test\n"), 0o644)
	_ = os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	h.cfg = Config{NodeName: h.node, NodeIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, DataDir: h.base,
		ResolvConf: resolv, HostsFile: hosts, BackoffBase: 500 * time.Millisecond, BackoffMax: 8 * time.Second,
		LeaseDuration: 4 * time.Second, StatusUpdateFrequency: time.Second, ResyncPeriod: 5 * time.Second}
	if mutate != nil {
		mutate(&h.cfg)
	}
	// The server side: node pod CIDRs.
	ctx, cancel := context.WithCancel(context.Background())
	f := kube.NewSharedInformerFactory(h.client, 0)
	ipam, err := nodeipam.New(nodeipam.Config{ClusterCIDR: netip.MustParsePrefix("10.42.0.0/16")}, h.client, f, log)
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	ipamDone := make(chan struct{})
	go func() { defer close(ipamDone); _ = ipam.Run(ctx, 1) }()
	h.startAgent()
	h.atTeardown = append(h.atTeardown, func() { cancel(); <-ipamDone; f.Shutdown() })
	return h
}

// testInitBinary is the small container init named by $ORCHTEST_INIT_BINARY
// (go build -tags seccomp ./runtime/internal/initbin), or nil (unset or
// "none"): the test binary is then the containers' init.
func testInitBinary(t testing.TB) []byte {
	p := os.Getenv("ORCHTEST_INIT_BINARY")
	if p == "" || p == "none" {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *harness) startAgent() {
	h.t.Helper()
	net := func(_ context.Context, p netip.Prefix) (Network, error) {
		return &loNetwork{cidr: p, next: p.Addr().Next(), ips: map[string]netip.Addr{}}, nil
	}
	a, err := New(h.cfg, h.client, Deps{Runtime: h.rt, Images: h.images, Network: net}, discardLogOr(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	a.stepHook = h.stepHook
	h.agent = a
	h.agentStarted = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("agent Run: %v", err)
		}
	}
}

func discardLogOr(t testing.TB) *slog.Logger {
	if os.Getenv("ORCHTEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return discardLog()
}

// cleanup is the test's Cleanup: teardown, failing the test on leftovers.
func (h *harness) cleanup() {
	h.teardown(h.t.Errorf)
	liveHarnesses.remove(h)
}

// teardown stops the agent and removes every pod it ran, then checks that
// nothing (mounts, cgroups) is left; it reports problems through errorf.
// It runs once: a second call waits for the first.
func (h *harness) teardown(errorf func(format string, args ...any)) {
	h.teardownOnce.Do(func() { h.teardownNow(errorf) })
}

func (h *harness) teardownNow(errorf func(format string, args ...any)) {
	if h.stop != nil {
		h.stop()
	}
	for _, f := range h.atTeardown {
		f()
	}
	uids := map[string]bool{}
	for _, st := range h.rt.ListContainers() {
		uids[st.PodUID] = true
	}
	if entries, err := os.ReadDir(filepath.Join(h.base, "agent", "pod-data")); err == nil {
		for _, e := range entries {
			uids[e.Name()] = true
			_ = cleanupPodVolumes(filepath.Join(h.base, "agent", "pod-data", e.Name(), "volumes"))
		}
	}
	if entries, err := os.ReadDir(filepath.Join(h.base, "agent", "pods")); err == nil {
		for _, e := range entries {
			uids[e.Name()] = true
		}
	}
	for uid := range uids {
		if err := h.rt.RemoveSandbox(uid); err != nil {
			errorf("cleanup sandbox %s: %v", uid, err)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], h.base) {
				errorf("leaked mount %s", f[4])
			}
		}
	}
	if m, err := cgmanager.New(&cgroups.Cgroup{Path: h.cgroot, Resources: &cgroups.Resources{}}); err == nil {
		if err := m.Destroy(); err != nil {
			errorf("remove cgroup root: %v", err)
		}
	}
	if err := h.rt.Close(); err != nil {
		errorf("close runtime: %v", err)
	}
}

func (h *harness) createPod(pod *corev1.Pod) *corev1.Pod {
	h.t.Helper()
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	pod.Spec.NodeName = h.node
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Image == "" {
			pod.Spec.Containers[i].Image = testImage
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Image == "" {
			pod.Spec.InitContainers[i].Image = testImage
		}
	}
	p, err := h.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// waitPod polls the pod until cond holds, failing with the last status.
func (h *harness) waitPod(ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	for time.Now().Before(deadline) {
		p, err := h.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("pod %s/%s: timed out waiting for %s; status: %s", ns, name, what, statusString(last))
	return nil
}

func statusString(p *corev1.Pod) string {
	if p == nil {
		return "<none>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s ip=%s", p.Status.Phase, p.Status.PodIP)
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s restarts=%d ready=%v", cs.Name, cs.RestartCount, cs.Ready)
		if s := cs.State.Waiting; s != nil {
			fmt.Fprintf(&b, " waiting %s: %s", s.Reason, s.Message)
		}
		if s := cs.State.Running; s != nil {
			b.WriteString(" running")
		}
		if s := cs.State.Terminated; s != nil {
			fmt.Fprintf(&b, " terminated %s exit=%d", s.Reason, s.ExitCode)
		}
		b.WriteString("]")
	}
	return b.String()
}

func containerStatusOf(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

func podRunningReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// exec runs cmd in the pod's container and returns its output.
func (h *harness) exec(p *corev1.Pod, ctr string, cmd ...string) string {
	h.t.Helper()
	cs := containerStatusOf(p, ctr)
	if cs == nil || cs.ContainerID == "" {
		h.t.Fatalf("no container %s", ctr)
	}
	var out syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := h.rt.Exec(ctx, strings.TrimPrefix(cs.ContainerID, "orch://"), runtime.ExecOptions{Cmd: cmd, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		h.t.Fatalf("exec %v: code %d err %v: %s", cmd, code, err, out.String())
	}
	return out.String()
}

func (h *harness) events(ns, name string) []corev1.Event {
	evs, err := h.client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func (h *harness) waitEvent(ns, name, reason string, timeout time.Duration) corev1.Event {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, e := range h.events(ns, name) {
			if e.Reason == reason {
				return e
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got []string
	for _, e := range h.events(ns, name) {
		got = append(got, e.Reason+": "+e.Message)
	}
	h.t.Fatalf("no %s event for %s/%s; events: %v", reason, ns, name, got)
	return corev1.Event{}
}

func sh(script string) []string { return []string{"sh", "-c", script} }
