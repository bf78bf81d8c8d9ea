package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/orch-dev/orch/internal/syncbuf"
	"github.com/orch-dev/orch/runtime"
	"github.com/orch-dev/orch/runtime/image"
)

// containerRec is what a pod worker knows of one container of the spec.
type containerRec struct {
	id      string // current runtime container ("" = none yet)
	attempt int    // restart count of the current container
	imageID string
	// lastID is the previous container of this name (lastState, --previous logs).
	lastID string
	// waitReason/waitMsg explain why no container runs (back-off, errors).
	waitReason, waitMsg string
	// restartDelay is the back-off applied before the next restart;
	// pullDelay the image pull back-off.
	restartDelay, pullDelay time.Duration
	notBefore               time.Time
	backoffEvented          time.Time
	// probe results (guarded by podWorker.mu).
	ready, started, livenessFailed bool
	probeStop                      context.CancelFunc
}

// podWorker converges one pod, identified by UID, with its spec.
type podWorker struct {
	a    *Agent
	uid  types.UID
	kick chan struct{}

	mu   sync.Mutex
	pod  *corev1.Pod // latest from the API; nil once deleted there
	last *corev1.Pod // last non-nil pod
	ctrs map[string]*containerRec

	// podIPs is written by the worker goroutine under mu (probes read it).
	podIPs []string
	// Owned by the worker goroutine.
	netReady  bool
	startTime *metav1.Time
	written   *corev1.PodStatus
	dir       string
	terminal  bool
	// volumesAt is when the volumes were last set up (configMap, secret
	// and downwardAPI contents are refreshed every ResyncPeriod).
	volumesAt time.Time
}

func newPodWorker(a *Agent, uid types.UID, pod *corev1.Pod) *podWorker {
	w := &podWorker{a: a, uid: uid, kick: make(chan struct{}, 1), pod: pod, last: pod,
		ctrs: map[string]*containerRec{}, dir: filepath.Join(a.podDataDir(), string(uid))}
	if pod != nil {
		w.written = pod.Status.DeepCopy()
	}
	return w
}

func (w *podWorker) setPod(p *corev1.Pod) {
	w.mu.Lock()
	w.pod = p
	if p != nil {
		w.last = p
	}
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() (*corev1.Pod, *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.last
}

func (w *podWorker) log(pod *corev1.Pod) []any {
	if pod == nil {
		return []any{"uid", w.uid}
	}
	return []any{"pod", pod.Namespace + "/" + pod.Name, "uid", w.uid}
}

// run syncs the pod on every event and timer until it is gone or ctx ends.
// Ending ctx stops nothing: containers outlive the agent.
func (w *podWorker) run(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.adopt(wctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			w.stopProbes()
			return
		case <-w.kick:
		case <-timer.C:
		}
		done, requeue := w.sync(wctx)
		if done {
			w.stopProbes()
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(requeue)
	}
}

// adopt rebuilds the worker's view from containers an earlier agent left.
func (w *podWorker) adopt(ctx context.Context) {
	byName := map[string][]runtime.ContainerStatus{}
	for _, st := range w.a.takeAdopted(w.uid) {
		byName[st.Name] = append(byName[st.Name], st)
	}
	for name, list := range byName {
		slices.SortFunc(list, func(a, b runtime.ContainerStatus) int { return b.Attempt - a.Attempt })
		rec := w.rec(name)
		rec.id, rec.attempt = list[0].ID, list[0].Attempt
		if len(list) > 1 {
			rec.lastID = list[1].ID
		}
		for _, old := range list[min(2, len(list)):] {
			_ = w.a.rt.RemoveContainer(old.ID)
		}
		if list[0].State == runtime.StateRunning {
			w.watchExit(ctx, rec.id)
		}
		rec.started = true
	}
}

func (w *podWorker) rec(name string) *containerRec {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.ctrs[name]
	if !ok {
		r = &containerRec{}
		w.ctrs[name] = r
	}
	return r
}

func (w *podWorker) stopProbes() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.ctrs {
		if r.probeStop != nil {
			r.probeStop()
			r.probeStop = nil
		}
	}
}

// watchExit kicks the worker when the container exits.
func (w *podWorker) watchExit(ctx context.Context, id string) {
	go func() {
		if _, err := w.a.rt.Wait(ctx, id); err == nil {
			w.poke()
		}
	}()
}

// sync converges the pod once; done means the worker's job is over.
func (w *podWorker) sync(ctx context.Context) (done bool, requeue time.Duration) {
	pod, last := w.current()
	resync := w.a.cfg.ResyncPeriod
	if pod == nil || pod.DeletionTimestamp != nil {
		grace := int64(30)
		if last != nil && last.Spec.TerminationGracePeriodSeconds != nil {
			grace = *last.Spec.TerminationGracePeriodSeconds
		}
		if pod != nil && pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		if err := w.terminate(ctx, last, time.Duration(grace)*time.Second); err != nil {
			w.a.log.Warn("terminate pod", append(w.log(last), "err", err)...)
			return false, 2 * time.Second
		}
		if pod == nil {
			return true, 0
		}
		uid := pod.UID
		err := w.a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.a.log.Warn("delete terminated pod", append(w.log(pod), "err", err)...)
			return false, 2 * time.Second
		}
		w.a.log.Info("pod terminated and deleted", w.log(pod)...)
		return true, 0
	}
	if w.terminal || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// A terminal pod never runs again; its containers and logs stay until it is deleted.
		w.terminal = true
		return false, resync
	}
	if w.startTime == nil {
		if pod.Status.StartTime != nil {
			w.startTime = pod.Status.StartTime.DeepCopy()
		} else {
			t := metav1.Now()
			w.startTime = &t
		}
	}
	next := resync
	t0 := time.Now()
	defer func() { w.a.log.Debug("pod synced", append(w.log(pod), "took", time.Since(t0))...) }()
	w.a.step(pod, "sync: begin", t0)
	sandboxReady, err := w.ensureSandbox(ctx, pod)
	t := w.a.step(pod, "sync: sandbox", t0)
	var initDone, initFailed bool
	if err != nil {
		w.a.log.Warn("pod sandbox", append(w.log(pod), "err", err)...)
		next = 5 * time.Second
	} else if sandboxReady {
		var d time.Duration
		initDone, initFailed, d = w.syncContainers(ctx, pod)
		next = min(next, d)
		if !w.volumesAt.IsZero() && time.Since(w.volumesAt) >= w.a.cfg.ResyncPeriod {
			w.refreshVolumes(pod)
		}
		t = w.a.step(pod, "sync: containers", t)
	}
	status := w.buildStatus(pod, sandboxReady, initDone, initFailed)
	t = w.a.step(pod, "sync: build status", t)
	if err := w.writeStatus(ctx, pod, status); err != nil {
		w.a.log.Warn("write pod status", append(w.log(pod), "err", err)...)
		next = min(next, 2*time.Second)
	}
	w.a.step(pod, "sync: write status", t)
	if status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed {
		w.terminal = true
		w.stopProbes()
		w.releaseNetwork(ctx, pod)
	}
	return false, max(next, 10*time.Millisecond)
}

// ensureSandbox makes the pod's sandbox, network, volumes' parent dir and
// /etc files. ready=false with nil error means it waits (no pod CIDR yet).
func (w *podWorker) ensureSandbox(ctx context.Context, pod *corev1.Pod) (bool, error) {
	hostname, _ := podHostname(pod, w.a.cfg.ClusterDomain)
	t := time.Now()
	if err := os.MkdirAll(w.dir, 0o750); err != nil {
		return false, err
	}
	defer func() { w.a.step(pod, "sandbox: network", t) }()
	sb, err := w.a.rt.CreateSandbox(runtime.SandboxConfig{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name,
		Hostname: hostname, HostNetwork: pod.Spec.HostNetwork, HostIPC: pod.Spec.HostIPC, HostPID: pod.Spec.HostPID})
	if err != nil {
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		return false, fmt.Errorf("create sandbox: %w", err)
	}
	t = w.a.step(pod, "sandbox: runtime", t)
	if pod.Spec.HostNetwork {
		w.setPodIPs(w.a.hostIPStrings())
		w.netReady = true
	} else if !w.netReady {
		network := w.a.network()
		if network == nil {
			w.a.recorder.Event(pod, corev1.EventTypeWarning, "NetworkNotReady", "network is not ready: the node has no pod CIDR yet")
			return false, nil
		}
		ips, err := network.Setup(ctx, string(pod.UID), sb.NetNS)
		if err != nil {
			w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to set up pod network: %v", err)
			return false, fmt.Errorf("pod network: %w", err)
		}
		strs := make([]string, 0, len(ips))
		for _, ip := range ips {
			strs = append(strs, ip.String())
		}
		w.setPodIPs(strs)
		w.netReady = true
	}
	return true, nil
}

// setPodIPs replaces the pod's IPs; probe goroutines read them through
// handlerHost, so the slice is swapped under the worker's lock, never
// modified in place.
func (w *podWorker) setPodIPs(ips []string) {
	w.mu.Lock()
	w.podIPs = ips
	w.mu.Unlock()
}

func (w *podWorker) releaseNetwork(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.HostNetwork || !w.netReady {
		return
	}
	if n := w.a.network(); n != nil {
		sb, err := w.a.rt.Sandbox(string(pod.UID))
		netns := ""
		if err == nil {
			netns = sb.NetNS
		}
		if err := n.Teardown(ctx, string(pod.UID), netns); err != nil {
			w.a.log.Warn("tear down pod network", append(w.log(pod), "err", err)...)
			return
		}
	}
	w.netReady = false
}

// terminate stops the pod's containers with grace (preStop hooks first)
// and removes its sandbox, network and volumes.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod, grace time.Duration) error {
	w.stopProbes()
	w.mu.Lock()
	type victim struct {
		name, id string
	}
	var vs []victim
	for name, r := range w.ctrs {
		if r.id != "" {
			vs = append(vs, victim{name, r.id})
		}
	}
	w.mu.Unlock()
	deadline := time.Now().Add(grace)
	var wg sync.WaitGroup
	for _, v := range vs {
		st, err := w.a.rt.ContainerStatus(v.id)
		if err != nil || st.State != runtime.StateRunning {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var spec *corev1.Container
			if pod != nil {
				spec = findContainer(pod, v.name)
				w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", v.name)
			}
			if spec != nil && spec.Lifecycle != nil && spec.Lifecycle.PreStop != nil && grace > 0 {
				hctx, cancel := context.WithDeadline(ctx, deadline)
				if err := w.runHandler(hctx, pod, v.id, spec.Lifecycle.PreStop); err != nil {
					w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
				}
				cancel()
			}
			left := max(time.Until(deadline), 0)
			if err := w.a.rt.StopContainer(ctx, v.id, left); err != nil {
				w.a.log.Warn("stop container", "id", v.id, "err", err)
			}
		}()
	}
	wg.Wait()
	if pod != nil {
		w.releaseNetwork(ctx, pod)
	} else if n := w.a.network(); n != nil {
		netns := ""
		if sb, err := w.a.rt.Sandbox(string(w.uid)); err == nil {
			netns = sb.NetNS
		}
		if err := n.Teardown(ctx, string(w.uid), netns); err != nil {
			return fmt.Errorf("tear down network: %w", err)
		}
	}
	if err := w.a.rt.RemoveSandbox(string(w.uid)); err != nil {
		return err
	}
	if err := cleanupPodVolumes(filepath.Join(w.dir, "volumes")); err != nil {
		return fmt.Errorf("remove volumes: %w", err)
	}
	if err := os.RemoveAll(w.dir); err != nil {
		return fmt.Errorf("remove pod dir: %w", err)
	}
	w.mu.Lock()
	w.ctrs = map[string]*containerRec{}
	w.mu.Unlock()
	return nil
}

// syncContainers runs init containers in order, then the app containers.
func (w *podWorker) syncContainers(ctx context.Context, pod *corev1.Pod) (initDone, initFailed bool, requeue time.Duration) {
	requeue = w.a.cfg.ResyncPeriod
	policy := pod.Spec.RestartPolicy
	initDone = true
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		rec := w.rec(c.Name)
		st, ok := w.status(rec)
		if ok && st.State == runtime.StateExited && st.ExitCode == 0 {
			continue
		}
		initDone = false
		if ok && (st.State == runtime.StateRunning || st.State == runtime.StateCreated) {
			break
		}
		if ok && st.State == runtime.StateExited && policy == corev1.RestartPolicyNever {
			initFailed = true
			break
		}
		requeue = min(requeue, w.startOrBackoff(ctx, pod, c, rec, ok, st))
		break
	}
	if !initDone {
		return false, initFailed, requeue
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		rec := w.rec(c.Name)
		st, ok := w.status(rec)
		if ok && st.State == runtime.StateRunning {
			w.mu.Lock()
			failed := rec.livenessFailed
			rec.livenessFailed = false
			w.mu.Unlock()
			if failed {
				w.killForRestart(ctx, pod, c, rec, "failed liveness probe")
				st, ok = w.status(rec)
			} else {
				continue
			}
		}
		if ok && st.State == runtime.StateExited {
			restart := policy == corev1.RestartPolicyAlways || policy == "" ||
				(policy == corev1.RestartPolicyOnFailure && st.ExitCode != 0)
			if !restart {
				continue
			}
		}
		if ok && st.State == runtime.StateCreated {
			continue
		}
		requeue = min(requeue, w.startOrBackoff(ctx, pod, c, rec, ok, st))
	}
	return true, false, requeue
}

// status returns the runtime status of rec's current container.
func (w *podWorker) status(rec *containerRec) (runtime.ContainerStatus, bool) {
	if rec.id == "" {
		return runtime.ContainerStatus{}, false
	}
	st, err := w.a.rt.ContainerStatus(rec.id)
	if errors.Is(err, runtime.ErrNotFound) {
		rec.id = "" // removed behind our back: start afresh
		return runtime.ContainerStatus{}, false
	}
	if err != nil {
		// Transient: report it as unknown rather than start a duplicate.
		return runtime.ContainerStatus{ID: rec.id, State: runtime.StateUnknown}, true
	}
	return st, true
}

func (w *podWorker) killForRestart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec, why string) {
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Container %s %s, will be restarted", c.Name, why)
	grace := 30 * time.Second
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	deadline := time.Now().Add(grace)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		hctx, cancel := context.WithDeadline(ctx, deadline)
		if err := w.runHandler(hctx, pod, rec.id, c.Lifecycle.PreStop); err != nil {
			w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
		}
		cancel()
	}
	if err := w.a.rt.StopContainer(ctx, rec.id, max(time.Until(deadline), 0)); err != nil {
		w.a.log.Warn("stop container", "id", rec.id, "err", err)
	}
}

// startOrBackoff (re)starts a container unless it is in back-off: crash
// back-off after it exited, image pull back-off after a failed pull, and
// the same back-off after configuration, create or start errors.
func (w *podWorker) startOrBackoff(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec, exists bool, st runtime.ContainerStatus) time.Duration {
	now := time.Now()
	if exists && st.State == runtime.StateExited && (rec.waitReason == "" || rec.waitReason == reasonCrashLoopBackOff) {
		bo := w.a.backoff
		if st.FinishedAt.Sub(st.StartedAt) >= bo.reset {
			rec.restartDelay = 0
		}
		rec.notBefore = st.FinishedAt.Add(rec.restartDelay)
		if now.Before(rec.notBefore) {
			rec.waitReason = reasonCrashLoopBackOff
			rec.waitMsg = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
				rec.restartDelay.Round(time.Second), c.Name, pod.Name, pod.Namespace, pod.UID)
			if rec.backoffEvented.Before(st.FinishedAt) {
				rec.backoffEvented = now
				w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)",
					c.Name, pod.Name, pod.Namespace, pod.UID)
			}
			return rec.notBefore.Sub(now)
		}
	}
	if now.Before(rec.notBefore) && rec.waitReason != "" && rec.waitReason != reasonCrashLoopBackOff {
		if rec.waitReason == reasonErrImagePull || rec.waitReason == reasonImagePullBackOff {
			if rec.waitReason == reasonErrImagePull {
				w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
			}
			rec.waitReason, rec.waitMsg = reasonImagePullBackOff, fmt.Sprintf("Back-off pulling image %q", c.Image)
		}
		return rec.notBefore.Sub(now)
	}
	if err := w.startContainer(ctx, pod, c, rec, exists); err != nil {
		w.a.log.Info("container not started", append(w.log(pod), "container", c.Name, "reason", rec.waitReason, "err", err)...)
		if rec.waitReason == reasonErrImagePull || rec.waitReason == reasonImagePullBackOff {
			rec.pullDelay = max(w.a.backoff.next(rec.pullDelay), w.a.backoff.base)
			rec.notBefore = time.Now().Add(rec.pullDelay)
			// Look again soon: ErrImagePull turns into ImagePullBackOff.
			return min(rec.pullDelay, time.Second)
		}
		rec.restartDelay = max(w.a.backoff.next(rec.restartDelay), w.a.backoff.base)
		rec.notBefore = time.Now().Add(rec.restartDelay)
		return rec.restartDelay
	}
	rec.pullDelay = 0
	if exists {
		rec.restartDelay = w.a.backoff.next(rec.restartDelay)
	}
	return w.a.cfg.ResyncPeriod
}

func pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref := c.Image
	if strings.Contains(ref, "@") {
		return corev1.PullIfNotPresent
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if _, tag, ok := strings.Cut(last, ":"); !ok || tag == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// ensureImage makes the container's image present per its pull policy.
func (w *podWorker) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec) (*image.Image, error) {
	fail := func(reason, msg string, err error) (*image.Image, error) {
		rec.waitReason, rec.waitMsg = reason, msg
		return nil, err
	}
	policy := pullPolicy(c)
	if policy != corev1.PullAlways {
		img, err := w.a.images.Resolve(ctx, c.Image)
		if err == nil {
			w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
			return img, nil
		}
		if errors.Is(err, image.ErrBadReference) {
			msg := fmt.Sprintf("Failed to apply default image tag %q: %v", c.Image, err)
			w.a.recorder.Event(pod, corev1.EventTypeWarning, "InspectFailed", msg)
			return fail(reasonInvalidImageName, msg, err)
		}
		if !errors.Is(err, image.ErrNotFound) {
			return fail(reasonErrImagePull, err.Error(), err)
		}
		if policy == corev1.PullNever {
			msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
			w.a.recorder.Event(pod, corev1.EventTypeWarning, reasonErrImageNeverPull, msg)
			return fail(reasonErrImageNeverPull, msg, err)
		}
	}
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	start := time.Now()
	img, err := w.a.images.Pull(ctx, c.Image, image.PullOptions{})
	if err != nil {
		msg := fmt.Sprintf("Failed to pull image %q: %v", c.Image, err)
		w.a.recorder.Event(pod, corev1.EventTypeWarning, "Failed", msg)
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %s", reasonErrImagePull)
		return fail(reasonErrImagePull, msg, err)
	}
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s. Image size: %d bytes.",
		c.Image, time.Since(start).Round(time.Millisecond), img.Size)
	return img, nil
}

func imageID(img *image.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID
}

// startContainer pulls, configures, creates and starts a container, runs
// its postStart hook and starts its probes. On error rec.waitReason says why.
func (w *podWorker) startContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec, restart bool) error {
	t := time.Now()
	img, err := w.ensureImage(ctx, pod, c, rec)
	if err != nil {
		return err
	}
	t = w.a.step(pod, "container: image", t)
	configErr := func(err error) error {
		rec.waitReason, rec.waitMsg = reasonCreateConfigError, err.Error()
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return err
	}
	paths, skips, err := w.a.volumes(w.dir).setup(pod, w.podIPs, w.a.hostIPStrings())
	for _, s := range skips {
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "volume %q: %s", s.volume, s.reason)
	}
	if err != nil {
		rec.waitReason, rec.waitMsg = reasonContainerCreating, ""
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", err)
		return err
	}
	w.volumesAt = time.Now()
	t = w.a.step(pod, "container: volumes", t)
	etc, err := w.writeEtc(pod)
	if err != nil {
		return configErr(err)
	}
	t = w.a.step(pod, "container: etc files", t)
	env, skipped, err := containerEnv(w.a.envContext(pod, w.podIPs), c)
	if err != nil {
		return configErr(err)
	}
	if len(skipped) > 0 {
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "InvalidEnvironmentVariableNames",
			"Keys [%s] from the EnvFrom configMap or secret were skipped since they are invalid environment variable names.", strings.Join(skipped, ", "))
	}
	mounts, err := containerMounts(c, paths, etc)
	if err != nil {
		return configErr(err)
	}
	attempt := 0
	if rec.id != "" {
		attempt = rec.attempt + 1
	}
	if m, err := w.terminationLog(c, attempt); err != nil {
		return configErr(err)
	} else if m != nil {
		mounts = append(mounts, *m)
	}
	lookup := func(n string) (string, bool) {
		for i := len(env) - 1; i >= 0; i-- {
			if env[i].Name == n {
				return env[i].Value, true
			}
		}
		return "", false
	}
	cmd, args := make([]string, len(c.Command)), make([]string, len(c.Args))
	for i, s := range c.Command {
		cmd[i] = expand(s, lookup)
	}
	for i, s := range c.Args {
		args[i] = expand(s, lookup)
	}
	sec, err := securityContext(pod, c)
	if err != nil {
		return configErr(err)
	}
	cfg := runtime.ContainerConfig{
		Name: c.Name, Attempt: attempt, Lowerdirs: img.LayerDirs,
		Image: runtime.ImageConfig{User: img.Config.User, Env: img.Config.Env, Entrypoint: img.Config.Entrypoint,
			Cmd: img.Config.Cmd, WorkingDir: img.Config.WorkingDir, StopSignal: img.Config.StopSignal},
		Command: cmd, Args: args, Env: env, WorkingDir: c.WorkingDir,
		Resources: resources(c), Security: sec, Mounts: mounts,
		Stdin: c.Stdin, StdinOnce: c.StdinOnce, TTY: c.TTY,
	}
	t = w.a.step(pod, "container: env+config", t)
	id, err := w.a.rt.CreateContainer(string(pod.UID), cfg)
	t = w.a.step(pod, "container: runtime create", t)
	if err != nil {
		rec.waitReason, rec.waitMsg = reasonCreateError, err.Error()
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return err
	}
	// The new container replaces the current one; keep one previous. The
	// record moves on first, so that no reader (logs --previous) is handed
	// the container being removed.
	w.mu.Lock()
	if rec.probeStop != nil {
		rec.probeStop()
		rec.probeStop = nil
	}
	dropped := rec.lastID
	rec.lastID, rec.id, rec.attempt, rec.imageID = rec.id, id, attempt, imageID(img)
	rec.ready, rec.started, rec.livenessFailed = false, false, false
	w.mu.Unlock()
	if dropped != "" {
		_ = w.a.rt.RemoveContainer(dropped)
		_ = os.Remove(w.terminationPath(c.Name, attempt-2))
	}
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	t = w.a.step(pod, "container: created", t)
	err = w.a.rt.StartContainer(id)
	t = w.a.step(pod, "container: runtime start", t)
	if err != nil {
		rec.waitReason, rec.waitMsg = reasonRunContainerError, err.Error()
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: failed to start container %q: %v", c.Name, err)
		return err
	}
	defer w.a.step(pod, "container: started", t)
	rec.waitReason, rec.waitMsg = "", ""
	w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
	w.watchExit(ctx, id)
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		if err := w.runHandler(ctx, pod, id, c.Lifecycle.PostStart); err != nil {
			w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: %v", err)
			w.a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "FailedPostStartHook")
			_ = w.a.rt.StopContainer(ctx, id, 0)
			return nil
		}
	}
	w.startProbes(ctx, pod, c, rec, id)
	return nil
}

// refreshVolumes rewrites projected volume contents that changed.
func (w *podWorker) refreshVolumes(pod *corev1.Pod) {
	w.volumesAt = time.Now()
	if _, _, err := w.a.volumes(w.dir).setup(pod, w.podIPs, w.a.hostIPStrings()); err != nil {
		w.a.log.Warn("refresh volumes", append(w.log(pod), "err", err)...)
		w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", err)
	}
}

// etcFiles are the per-pod files mounted over the image's.
type etcFiles struct{ hosts, resolv, hostname string }

func (w *podWorker) writeEtc(pod *corev1.Pod) (etcFiles, error) {
	e := etcFiles{hosts: filepath.Join(w.dir, "etc-hosts"), resolv: filepath.Join(w.dir, "resolv.conf"), hostname: filepath.Join(w.dir, "hostname")}
	var hostHosts []byte
	if pod.Spec.HostNetwork {
		hostHosts, _ = os.ReadFile(w.a.cfg.HostsFile)
	}
	if err := writeIfChanged(e.hosts, hostsFile(pod, w.podIPs, w.a.cfg.ClusterDomain, hostHosts), 0o644); err != nil {
		return e, err
	}
	host, _ := os.ReadFile(w.a.cfg.ResolvConf)
	rc, err := dnsConfig(pod, w.a.cfg.ClusterDNS.String(), w.a.cfg.ClusterDomain, parseResolvConf(host))
	if err != nil {
		return e, err
	}
	if err := writeIfChanged(e.resolv, rc, 0o644); err != nil {
		return e, err
	}
	hn, _ := podHostname(pod, w.a.cfg.ClusterDomain)
	if pod.Spec.HostNetwork {
		hn, _ = os.Hostname()
	}
	return e, writeIfChanged(e.hostname, []byte(hn+"\n"), 0o644)
}

func containerMounts(c *corev1.Container, paths map[string]string, etc etcFiles) ([]runtime.Mount, error) {
	var out []runtime.Mount
	seen := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		p, ok := paths[vm.Name]
		if !ok {
			return nil, fmt.Errorf("cannot find volume %q to mount into container %q", vm.Name, c.Name)
		}
		if vm.SubPath != "" {
			if filepath.IsAbs(vm.SubPath) || slices.Contains(strings.Split(vm.SubPath, "/"), "..") {
				return nil, fmt.Errorf("invalid subPath %q", vm.SubPath)
			}
			p = filepath.Join(p, vm.SubPath)
			if _, err := os.Stat(p); err != nil {
				if err := os.MkdirAll(p, 0o755); err != nil {
					return nil, fmt.Errorf("subPath %q: %w", vm.SubPath, err)
				}
			}
		}
		out = append(out, runtime.Mount{HostPath: p, ContainerPath: vm.MountPath, ReadOnly: vm.ReadOnly})
		seen[filepath.Clean(vm.MountPath)] = true
	}
	for _, m := range []runtime.Mount{{HostPath: etc.hosts, ContainerPath: "/etc/hosts"},
		{HostPath: etc.resolv, ContainerPath: "/etc/resolv.conf"}, {HostPath: etc.hostname, ContainerPath: "/etc/hostname"}} {
		if !seen[m.ContainerPath] {
			out = append(out, m)
		}
	}
	return out, nil
}

func resources(c *corev1.Container) runtime.Resources {
	var r runtime.Resources
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		r.CPURequestMilli = q.MilliValue()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.CPULimitMilli = q.MilliValue()
		if r.CPURequestMilli == 0 {
			r.CPURequestMilli = r.CPULimitMilli
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimit = q.Value()
	}
	return r
}

func securityContext(pod *corev1.Pod, c *corev1.Container) (runtime.SecurityContext, error) {
	var s runtime.SecurityContext
	if psc := pod.Spec.SecurityContext; psc != nil {
		s.RunAsUser, s.RunAsGroup = psc.RunAsUser, psc.RunAsGroup
		if psc.SeccompProfile != nil {
			s.Seccomp = string(psc.SeccompProfile.Type)
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			s.RunAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			s.RunAsGroup = sc.RunAsGroup
		}
		s.Privileged = sc.Privileged != nil && *sc.Privileged
		s.ReadOnlyRootFilesystem = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		s.AllowPrivilegeEscalation = sc.AllowPrivilegeEscalation
		if sc.Capabilities != nil {
			for _, cp := range sc.Capabilities.Add {
				s.CapAdd = append(s.CapAdd, string(cp))
			}
			for _, cp := range sc.Capabilities.Drop {
				s.CapDrop = append(s.CapDrop, string(cp))
			}
		}
		if sc.SeccompProfile != nil {
			s.Seccomp = string(sc.SeccompProfile.Type)
		}
		if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && s.RunAsUser != nil && *s.RunAsUser == 0 {
			return s, errors.New("container's runAsUser breaks non-root policy")
		}
	}
	switch s.Seccomp {
	case "", runtime.SeccompRuntimeDefault, runtime.SeccompUnconfined:
	default:
		return s, fmt.Errorf("seccomp profile type %q is not supported", s.Seccomp)
	}
	return s, nil
}

// containerStatus renders one container's status.
func (w *podWorker) containerStatus(c *corev1.Container, rec *containerRec, initDone, isInit bool) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: rec.imageID, RestartCount: int32(rec.attempt)}
	st, ok := w.status(rec)
	w.mu.Lock()
	ready, started := rec.ready, rec.started
	w.mu.Unlock()
	if ok {
		cs.ContainerID = "orch://" + st.ID
	}
	if rec.lastID != "" {
		if ls, err := w.a.rt.ContainerStatus(rec.lastID); err == nil && ls.State == runtime.StateExited {
			cs.LastTerminationState.Terminated = w.terminated(c, ls)
		}
	}
	switch {
	case rec.waitReason != "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: rec.waitReason, Message: rec.waitMsg}
		if ok && st.State == runtime.StateExited {
			cs.LastTerminationState = corev1.ContainerState{Terminated: w.terminated(c, st)}
		}
	case ok && st.State == runtime.StateRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}
		if c.StartupProbe == nil {
			started = true
		}
		if c.ReadinessProbe == nil {
			ready = started
		}
		cs.Ready = ready && started
		cs.Started = &started
	case ok && st.State == runtime.StateExited:
		cs.State.Terminated = w.terminated(c, st)
		f := false
		cs.Started = &f
		if isInit && st.ExitCode == 0 {
			cs.Ready = true
		}
	default:
		reason := reasonContainerCreating
		if !isInit && !initDone {
			reason = reasonPodInitializing
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		f := false
		cs.Started = &f
	}
	if cs.State.Running == nil && cs.Started == nil {
		f := false
		cs.Started = &f
	}
	return cs
}

// terminationPath is the host file behind a container attempt's
// terminationMessagePath.
func (w *podWorker) terminationPath(name string, attempt int) string {
	return filepath.Join(w.dir, "termination", name+"-"+strconv.Itoa(attempt))
}

// terminationLog prepares the (empty, world-writable) termination message
// file of a container attempt and its mount.
func (w *podWorker) terminationLog(c *corev1.Container, attempt int) (*runtime.Mount, error) {
	dst := c.TerminationMessagePath
	if dst == "" {
		dst = corev1.TerminationMessagePathDefault
	}
	if !filepath.IsAbs(dst) {
		return nil, fmt.Errorf("terminationMessagePath %q is not absolute", dst)
	}
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == filepath.Clean(dst) {
			return nil, nil
		}
	}
	p := w.terminationPath(c.Name, attempt)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		return nil, err
	}
	if err := os.Chmod(p, 0o666); err != nil {
		return nil, err
	}
	return &runtime.Mount{HostPath: p, ContainerPath: dst}, nil
}

// Termination message limits, as upstream's.
const (
	maxTerminationMessage = 4096
	maxFallbackLogLines   = 80
	maxFallbackLogBytes   = 2048
)

// terminated renders a container's termination with its message: the
// termination message file, or with FallbackToLogsOnError and a failure
// the tail of its log.
func (w *podWorker) terminated(c *corev1.Container, st runtime.ContainerStatus) *corev1.ContainerStateTerminated {
	t := terminated(st)
	if b, err := os.ReadFile(w.terminationPath(st.Name, st.Attempt)); err == nil && len(b) > 0 {
		t.Message = string(b[:min(len(b), maxTerminationMessage)])
	} else if c != nil && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && st.ExitCode != 0 {
		var out syncbuf.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := w.a.rt.Logs(ctx, st.ID, runtime.LogOptions{Tail: maxFallbackLogLines}, &out); err == nil {
			m := out.String()
			if len(m) > maxFallbackLogBytes {
				m = m[len(m)-maxFallbackLogBytes:]
			}
			t.Message = m
		}
		cancel()
	}
	return t
}

func terminated(st runtime.ContainerStatus) *corev1.ContainerStateTerminated {
	reason := st.Reason
	if reason == runtime.ReasonStartError {
		reason = reasonContainerCannotRun
	}
	return &corev1.ContainerStateTerminated{ExitCode: int32(st.ExitCode), Reason: reason, Message: st.Message,
		StartedAt: metav1.NewTime(st.StartedAt), FinishedAt: metav1.NewTime(st.FinishedAt), ContainerID: "orch://" + st.ID}
}

// buildStatus computes the pod's status from what the worker knows.
func (w *podWorker) buildStatus(pod *corev1.Pod, sandboxReady, initDone, initFailed bool) corev1.PodStatus {
	st := corev1.PodStatus{QOSClass: qosClass(&pod.Spec), StartTime: w.startTime}
	for _, ip := range w.a.hostIPStrings() {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
	}
	if len(st.HostIPs) > 0 {
		st.HostIP = st.HostIPs[0].IP
	}
	if sandboxReady {
		for _, ip := range w.podIPs {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(st.PodIPs) > 0 {
			st.PodIP = st.PodIPs[0].IP
		}
	} else if w.written != nil {
		st.PodIP, st.PodIPs = w.written.PodIP, w.written.PodIPs
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		st.InitContainerStatuses = append(st.InitContainerStatuses, w.containerStatus(c, w.rec(c.Name), initDone, true))
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		st.ContainerStatuses = append(st.ContainerStatuses, w.containerStatus(c, w.rec(c.Name), initDone, false))
	}
	st.Phase = podPhase(&pod.Spec, st.InitContainerStatuses, st.ContainerStatuses, initDone, initFailed)
	var old []corev1.PodCondition
	if w.written != nil {
		old = w.written.Conditions
	}
	st.Conditions = podConditions(old, st.Phase, sandboxReady, initDone, st.InitContainerStatuses, st.ContainerStatuses, metav1.Now())
	// Times come back from the API truncated to seconds: compare like with like.
	return roundTrip(st)
}

func roundTrip(st corev1.PodStatus) corev1.PodStatus {
	b, err := json.Marshal(st)
	if err != nil {
		return st
	}
	var out corev1.PodStatus
	if err := json.Unmarshal(b, &out); err != nil {
		return st
	}
	return out
}

// writeStatus patches the pod's status subresource when it changed.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod, st corev1.PodStatus) error {
	if w.written != nil && apiequality.Semantic.DeepEqual(*w.written, st) {
		return nil
	}
	b, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return err
	}
	if _, err := w.a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, b, metav1.PatchOptions{}, "status"); err != nil {
		return err
	}
	w.written = &st
	return nil
}

func addrStrings(a []netip.Addr) []string {
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = x.String()
	}
	return out
}
