package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchEnv is newTestRuntime for benchmarks. Containers start with the
// small init, as orch's do (ORCHTEST_INIT_BINARY=none re-executes the test
// binary instead).
func benchEnv(b *testing.B) *testEnv {
	needRoot(b)
	base := b.TempDir()
	e := &testEnv{stateDir: filepath.Join(base, "state"), logDir: filepath.Join(base, "logs"),
		cgroupRoot: "/orchtest-ctr-" + randHex(4), layer: busyboxRootfs(b)}
	var initBinary []byte
	if os.Getenv("ORCHTEST_INIT_BINARY") != "none" {
		initBinary = buildInit(b)
	}
	r, err := New(Config{StateDir: e.stateDir, LogDir: e.logDir, CgroupRoot: e.cgroupRoot, InitBinary: initBinary}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	e.r = r
	b.Cleanup(func() {
		for _, st := range r.ListContainers() {
			_ = r.RemoveContainer(st.ID)
		}
		r.mu.Lock()
		var uids []string
		for uid := range r.pods {
			uids = append(uids, uid)
		}
		r.mu.Unlock()
		for _, uid := range uids {
			if err := r.RemoveSandbox(uid); err != nil {
				b.Error(err)
			}
		}
		_ = r.removeCgroupPath(e.cgroupRoot)
	})
	return e
}

// BenchmarkRunTrue: create + start + wait + remove of a container running
// /bin/true in an existing pod, through the runtime.
func BenchmarkRunTrue(b *testing.B) {
	e := benchEnv(b)
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: "uid-bench", Namespace: "default", Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id, err := e.r.CreateContainer(sb.Config.UID, ContainerConfig{Name: "t", Attempt: i, Lowerdirs: []string{e.layer}, Command: []string{"/bin/true"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.r.StartContainer(id); err != nil {
			b.Fatal(err)
		}
		st, err := e.r.Wait(ctx, id)
		if err != nil || st.ExitCode != 0 {
			b.Fatalf("%+v %v", st, err)
		}
		if err := e.r.RemoveContainer(id); err != nil {
			b.Fatal(err)
		}
		e.r.waitBackground()
	}
}

// BenchmarkRuncRunTrue: Debian's `runc run` of /bin/true on a bundle whose
// rootfs is the same busybox dir (runc spec defaults, no terminal).
func BenchmarkRuncRunTrue(b *testing.B) {
	needRoot(b)
	runc := runcPath(b)
	bundle, root, prefix := runcBundle(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := exec.Command(runc, "--root", root, "run", "--bundle", bundle, prefix+"-"+strconv.Itoa(i)).CombinedOutput()
		if err != nil {
			b.Fatalf("runc run: %v %s", err, out)
		}
	}
}

// BenchmarkIdlePodMemory reports the host-side memory of an idle pod beyond
// its containers' own processes: the monitor's RSS and PSS.
func BenchmarkIdlePodMemory(b *testing.B) {
	e := benchEnv(b)
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: "uid-mem", Namespace: "default", Name: "mem"})
	if err != nil {
		b.Fatal(err)
	}
	id, err := e.r.CreateContainer(sb.Config.UID, ContainerConfig{Name: "idle", Lowerdirs: []string{e.layer}, Command: []string{"sleep", "1000"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		b.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	c, _ := e.r.get(id)
	var rss, pss, priv float64
	for i := 0; i < b.N; i++ {
		rss, pss, priv, err = smapsRollup(c.meta.MonitorPid)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(rss, "monitor-rss-KiB")
	b.ReportMetric(pss, "monitor-pss-KiB")
	b.ReportMetric(priv, "monitor-private-KiB")
}

func smapsRollup(pid int) (rss, pss, priv float64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		case "Private_Clean:", "Private_Dirty:":
			priv += v
		}
	}
	return rss, pss, priv, nil
}

// BenchmarkRunTrueVsRunc alternates the two in one loop, so that load from
// other work on the machine hits both alike; it reports each one's mean and
// their ratio.
func BenchmarkRunTrueVsRunc(b *testing.B) {
	e := benchEnv(b)
	runc := runcPath(b)
	bundle, root, prefix := runcBundle(b)
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: "uid-vs", Namespace: "default", Name: "vs"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var orchT, runcT time.Duration
	orchS, runcS := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	var stepsMu sync.Mutex
	steps := map[string]time.Duration{}
	e.r.stepHook = func(step string, d time.Duration) {
		stepsMu.Lock()
		steps[step] += d
		stepsMu.Unlock()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		id, err := e.r.CreateContainer(sb.Config.UID, ContainerConfig{Name: "t", Attempt: i, Lowerdirs: []string{e.layer}, Command: []string{"/bin/true"}})
		if err == nil {
			err = e.r.StartContainer(id)
		}
		if err == nil {
			tw := time.Now()
			_, err = e.r.Wait(ctx, id)
			e.r.step("wait", tw)
		}
		if err == nil {
			err = e.r.RemoveContainer(id)
		}
		if err != nil {
			b.Fatal(err)
		}
		// The container dir's background removal counts too (and must
		// not overlap runc's turn).
		e.r.waitBackground()
		t1 := time.Now()
		if out, err := exec.Command(runc, "--root", root, "run", "--bundle", bundle, prefix+"-"+strconv.Itoa(i)).CombinedOutput(); err != nil {
			b.Fatalf("runc run: %v %s", err, out)
		}
		orchS, runcS = append(orchS, t1.Sub(t0)), append(runcS, time.Since(t1))
		orchT += orchS[i]
		runcT += runcS[i]
	}
	b.StopTimer()
	b.ReportMetric(float64(orchT.Nanoseconds())/float64(b.N), "orch-ns/run")
	b.ReportMetric(float64(runcT.Nanoseconds())/float64(b.N), "runc-ns/run")
	b.ReportMetric(float64(orchT)/float64(runcT), "orch/runc")
	// Medians shrug off the load spikes of a shared machine.
	om, rm := median(orchS), median(runcS)
	b.ReportMetric(float64(om.Nanoseconds()), "orch-median-ns")
	b.ReportMetric(float64(rm.Nanoseconds()), "runc-median-ns")
	b.ReportMetric(float64(om)/float64(rm), "median-orch/runc")
	// Each orch run next to the runc run that followed it: the median of
	// those ratios is the steadiest figure under changing load.
	ratios := make([]float64, len(orchS))
	for i := range orchS {
		ratios[i] = float64(orchS[i]) / float64(runcS[i])
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "paired-median-orch/runc")
	stepsMu.Lock()
	defer stepsMu.Unlock()
	if testing.Verbose() {
		names := slices.Sorted(maps.Keys(steps))
		for _, n := range names {
			b.Logf("%-32s %8.2f ms/run", n, float64(steps[n].Microseconds())/1000/float64(b.N))
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// runcPath returns the runc binary to compare with: $ORCHTEST_RUNC (e.g. a
// runc built from the same libcontainer version as orch) or Debian's runc.
func runcPath(b *testing.B) string {
	if p := os.Getenv("ORCHTEST_RUNC"); p != "" {
		return p
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed (apt-get install -y runc)")
	}
	return runc
}

// runcBundle makes a `runc spec` bundle running /bin/true in a busybox
// rootfs; its containers' cgroups go under /<prefix>, removed at cleanup.
func runcBundle(b *testing.B) (bundle, root, prefix string) {
	bundle = b.TempDir()
	root = filepath.Join(b.TempDir(), "runc-root")
	if err := makeBusyboxRootfs("/bin/busybox", filepath.Join(bundle, "rootfs")); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(runcPath(b), "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v %s", err, out)
	}
	var spec map[string]any
	raw, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err := json.Unmarshal(raw, &spec); err != nil {
		b.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/true"}
	prefix = "orchtest-runc-" + randHex(3)
	spec["linux"].(map[string]any)["cgroupsPath"] = "/" + prefix
	raw, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, sub := range []string{"memory", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "pids", "systemd", "unified"} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", sub, prefix))
		}
	})
	return bundle, root, prefix
}
