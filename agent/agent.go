package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/events"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/runtime"
)

// Agent is the node agent.
type Agent struct {
	cfg     Config
	client  kube.Interface
	rt      Runtime
	images  Images
	netFac  NetworkFactory
	log     *slog.Logger
	backoff backoff

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	podFactory *kube.SharedInformerFactory
	svcFactory *kube.SharedInformerFactory
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	synced     []cache.InformerSynced

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	net     Network
	podCIDR netip.Prefix
	wg      sync.WaitGroup
	runCtx  context.Context
	// adopted are the containers found at start, by pod, until the pod's
	// worker takes them.
	adopted map[types.UID][]runtime.ContainerStatus

	// stepHook, when set (by benchmarks, before Run), is told the wall
	// time of each step of a pod's sync.
	stepHook func(pod *corev1.Pod, step string, d time.Duration)
}

// step reports the time since t0 to the step hook and returns now.
func (a *Agent) step(pod *corev1.Pod, name string, t0 time.Time) time.Time {
	now := time.Now()
	if a.stepHook != nil {
		a.stepHook(pod, name, now.Sub(t0))
	}
	return now
}

// New makes an agent for the node cfg.NodeName talking to the cluster
// through client (the in-process client inside `orch server`, the node's
// client-certificate one in `orch agent`).
func New(cfg Config, client kube.Interface, deps Deps, log *slog.Logger) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if client == nil || deps.Runtime == nil || deps.Images == nil || log == nil {
		return nil, errors.New("agent: client, runtime, images and logger are required")
	}
	a := &Agent{cfg: cfg, client: client, rt: deps.Runtime, images: deps.Images, netFac: deps.Network,
		log: log.With("component", "agent", "node", cfg.NodeName), workers: map[types.UID]*podWorker{},
		backoff: backoff{base: cfg.BackoffBase, max: cfg.BackoffMax, reset: cfg.BackoffReset}}
	a.broadcaster = events.NewBroadcaster()
	a.recorder = a.broadcaster.NewRecorder(kube.Scheme(), corev1.EventSource{Component: "kubelet", Host: cfg.NodeName})
	a.podFactory = kube.NewSharedInformerFactory(client, 0, kube.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	a.svcFactory = kube.NewSharedInformerFactory(client, 0)
	podInf, svcInf := a.podFactory.Core().V1().Pods(), a.svcFactory.Core().V1().Services()
	a.pods, a.services = podInf.Lister(), svcInf.Lister()
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, svcInf.Informer().HasSynced}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.podChanged(o) },
		UpdateFunc: func(_, o any) { a.podChanged(o) },
		DeleteFunc: func(o any) { a.podDeleted(o) },
	}); err != nil {
		return nil, fmt.Errorf("agent: pod handler: %w", err)
	}
	return a, nil
}

func (a *Agent) podDataDir() string { return filepath.Join(a.cfg.DataDir, "agent", "pod-data") }

// Run registers the node and runs its heartbeat and pods until ctx ends.
// Pods keep running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.podDataDir(), 0o750); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	sink := a.broadcaster.StartRecordingToSink(kube.EventSink{Client: a.client.CoreV1()})
	defer a.broadcaster.Shutdown()
	defer sink.Stop()
	g, ctx := errgroup.WithContext(ctx)
	adopted := map[types.UID][]runtime.ContainerStatus{}
	for _, st := range a.rt.ListContainers() {
		adopted[types.UID(st.PodUID)] = append(adopted[types.UID(st.PodUID)], st)
	}
	a.mu.Lock()
	a.runCtx = ctx
	a.adopted = adopted
	a.mu.Unlock()
	ns := newNodeStatus(a)
	g.Go(func() error { return ns.run(ctx) })
	g.Go(func() error { return a.runLease(ctx) })
	a.podFactory.Start(ctx.Done())
	a.svcFactory.Start(ctx.Done())
	g.Go(func() error {
		if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
			return nil // ctx ended
		}
		a.log.Info("pod and service caches synced")
		a.startExisting(ctx)
		a.cleanOrphans()
		<-ctx.Done()
		return nil
	})
	err := g.Wait()
	a.podFactory.Shutdown()
	a.svcFactory.Shutdown()
	a.wg.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// startExisting starts workers for the pods the informer listed (their
// handlers ran before runCtx was set only if Start raced; this is idempotent).
func (a *Agent) startExisting(ctx context.Context) {
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		a.podChanged(p)
	}
}

// takeAdopted hands a pod's containers found at start to its worker.
func (a *Agent) takeAdopted(uid types.UID) []runtime.ContainerStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	cs := a.adopted[uid]
	delete(a.adopted, uid)
	return cs
}

// cleanOrphans tears down sandboxes and containers of pods the API no
// longer has. It runs only after the pod cache synced: a failing API
// never makes the agent stop pods.
func (a *Agent) cleanOrphans() {
	uids := map[types.UID]bool{}
	a.mu.Lock()
	for uid := range a.adopted {
		uids[uid] = true
	}
	a.mu.Unlock()
	if entries, err := os.ReadDir(a.podDataDir()); err == nil {
		for _, e := range entries {
			uids[types.UID(e.Name())] = true
		}
	}
	known := map[types.UID]bool{}
	if pods, err := a.pods.List(labels.Everything()); err == nil {
		for _, p := range pods {
			known[p.UID] = true
		}
	}
	for uid := range uids {
		if !known[uid] {
			a.log.Info("removing pod the API no longer has", "uid", uid)
			a.ensureWorker(uid, nil)
		}
	}
}

func (a *Agent) podChanged(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok || p.Spec.NodeName != a.cfg.NodeName {
		return
	}
	a.ensureWorker(p.UID, p)
}

func (a *Agent) podDeleted(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[p.UID]
	a.mu.Unlock()
	if w != nil {
		w.setPod(nil)
	} else {
		a.ensureWorker(p.UID, nil) // clean up whatever is left
	}
}

// ensureWorker hands pod to its worker, starting one if needed.
func (a *Agent) ensureWorker(uid types.UID, pod *corev1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w, ok := a.workers[uid]; ok {
		if pod != nil {
			w.setPod(pod)
		}
		return
	}
	if a.runCtx == nil || a.runCtx.Err() != nil {
		return
	}
	w := newPodWorker(a, uid, pod)
	a.workers[uid] = w
	ctx := a.runCtx
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(ctx)
		a.mu.Lock()
		if a.workers[uid] == w {
			delete(a.workers, uid)
		}
		a.mu.Unlock()
	}()
}

// network returns the pod network, making it once the pod CIDR is known.
func (a *Agent) network() Network {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.net
}

// setPodCIDR is called by the node status loop with spec.podCIDR.
func (a *Agent) setPodCIDR(ctx context.Context, cidr string) {
	a.mu.Lock()
	have := a.net != nil || a.netFac == nil
	a.mu.Unlock()
	if have || cidr == "" {
		return
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		a.log.Error("node has an invalid pod CIDR", "podCIDR", cidr, "err", err)
		return
	}
	n, err := a.netFac(ctx, p)
	if err != nil {
		a.log.Error("pod network", "podCIDR", p, "err", err)
		return
	}
	a.mu.Lock()
	a.net, a.podCIDR = n, p
	ws := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	a.log.Info("pod network ready", "podCIDR", p)
	if pn, ok := n.(PeerNetwork); ok {
		a.mu.Lock()
		runCtx := a.runCtx
		a.mu.Unlock()
		if runCtx != nil {
			a.wg.Add(1)
			go func() { defer a.wg.Done(); a.runPeers(runCtx, pn) }()
		}
	}
	for _, w := range ws {
		w.poke()
	}
}

func (a *Agent) hostIPStrings() []string { return addrStrings(a.cfg.NodeIPs) }

// apiObjects reads ConfigMaps and Secrets straight from the API.
type apiObjects struct {
	ctx    context.Context
	client kube.Interface
}

func (o apiObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	ctx, cancel := context.WithTimeout(o.ctx, 10*time.Second)
	defer cancel()
	return o.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (o apiObjects) Secret(ns, name string) (*corev1.Secret, error) {
	ctx, cancel := context.WithTimeout(o.ctx, 10*time.Second)
	defer cancel()
	return o.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

func (a *Agent) objects() objectSource {
	a.mu.Lock()
	ctx := a.runCtx
	a.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	return apiObjects{ctx: ctx, client: a.client}
}

func (a *Agent) volumes(podDir string) *volumeManager {
	return &volumeManager{dir: filepath.Join(podDir, "volumes"), objects: a.objects()}
}

func (a *Agent) envContext(pod *corev1.Pod, podIPs []string) *envContext {
	all, _ := a.services.List(labels.Everything())
	return &envContext{pod: pod, podIPs: podIPs, hostIPs: a.hostIPStrings(), objects: a.objects(),
		services: podServices(pod, all), nodeAllocatable: a.allocatable()}
}

func (a *Agent) allocatable() corev1.ResourceList {
	cpu, mem := machineResources()
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(cpu), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
	}
}
