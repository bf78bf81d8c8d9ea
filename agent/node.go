package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// KubeletVersion is the version the Node reports.
const KubeletVersion = "v1.37.2+orch"

// machineResources returns the CPU count and memory bytes of the machine.
func machineResources() (int, int64) {
	mem := int64(0)
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = meminfo(b)["MemTotal"]
	}
	return goruntime.NumCPU(), mem
}

// meminfo parses /proc/meminfo into bytes by key.
func meminfo(b []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		out[k] = n
	}
	return out
}

// osImage reads PRETTY_NAME from os-release.
func osImage(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return "Linux"
}

func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// nodeLabels are the labels the agent owns.
func (a *Agent) nodeLabels() map[string]string {
	l := map[string]string{
		corev1.LabelHostname:      a.cfg.NodeName,
		corev1.LabelOSStable:      goruntime.GOOS,
		corev1.LabelArchStable:    goruntime.GOARCH,
		"beta.kubernetes.io/os":   goruntime.GOOS,
		"beta.kubernetes.io/arch": goruntime.GOARCH,
	}
	if a.cfg.ControlPlane {
		l["node-role.kubernetes.io/control-plane"] = "true"
		l["node-role.kubernetes.io/master"] = "true"
	}
	maps.Copy(l, a.cfg.Labels)
	return l
}

// nodeStatus keeps the Node registered and its status current, writing
// only when something changed or StatusReportFrequency passed.
type nodeStatus struct {
	a          *Agent
	lastWrite  time.Time
	lastStatus *corev1.NodeStatus
	registered bool
}

func newNodeStatus(a *Agent) *nodeStatus { return &nodeStatus{a: a} }

func (n *nodeStatus) run(ctx context.Context) error {
	a := n.a
	// Register, retrying with back-off while the API is away.
	bo := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 30 * time.Second}
	for !n.registered {
		if err := n.register(ctx); err != nil {
			d := bo.Step()
			a.log.Warn("register node", "err", err, "retry", d)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
			continue
		}
		n.registered = true
	}
	t := time.NewTicker(a.cfg.StatusUpdateFrequency)
	defer t.Stop()
	// The pod CIDR comes moments after registration (node IPAM); until
	// it does, pods cannot start: look again after 25 ms, doubling to 1s.
	fast := 25 * time.Millisecond
	for {
		if err := n.update(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("update node status", "err", err)
		}
		tick := t.C
		if a.network() == nil && a.netFac != nil {
			tick = time.After(fast)
			fast = min(2*fast, time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

func (n *nodeStatus) register(ctx context.Context) error {
	a := n.a
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: a.nodeLabels()},
		Spec:       corev1.NodeSpec{Taints: a.cfg.Taints},
	}
	_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err == nil {
		a.log.Info("node registered")
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	// Re-registration: bring our labels and taints back, keep the rest.
	cur, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want := a.nodeLabels()
	labelsOK := true
	for k, v := range want {
		if cur.Labels[k] != v {
			labelsOK = false
		}
	}
	taints := cur.Spec.Taints
	for _, t := range a.cfg.Taints {
		found := false
		for _, c := range taints {
			if c.Key == t.Key && c.Effect == t.Effect {
				found = true
			}
		}
		if !found {
			taints = append(taints, t)
		}
	}
	if labelsOK && len(taints) == len(cur.Spec.Taints) {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"labels": want}}
	if len(taints) != len(cur.Spec.Taints) {
		patch["spec"] = map[string]any{"taints": taints}
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, b, metav1.PatchOptions{})
	return err
}

// compute builds the Node status from the machine.
func (n *nodeStatus) compute(prev *corev1.NodeStatus, now metav1.Time) corev1.NodeStatus {
	a := n.a
	cpu, mem := machineResources()
	var st unix.Statfs_t
	storage := int64(0)
	diskPressure := false
	if err := unix.Statfs(a.cfg.DataDir, &st); err == nil {
		storage = int64(st.Blocks) * st.Bsize
		diskPressure = st.Blocks > 0 && st.Bavail*10 < st.Blocks // less than 10% available
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(cpu), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(a.cfg.MaxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(storage, resource.BinarySI),
	}
	memAvail := int64(-1)
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, ok := meminfo(b)["MemAvailable"]; ok {
			memAvail = v
		}
	}
	memPressure := memAvail >= 0 && memAvail < 100<<20
	pidPressure := false
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if ents, err := os.ReadDir("/proc"); err == nil && len(ents)*10 > max*9 {
				pidPressure = true
			}
		}
	}
	cond := func(t corev1.NodeConditionType, status bool, reasonT, msgT, reasonF, msgF string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reasonF, Message: msgF, LastHeartbeatTime: now, LastTransitionTime: now}
		if status {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, reasonT, msgT
		}
		if prev != nil {
			for _, p := range prev.Conditions {
				if p.Type == t && p.Status == c.Status {
					c.LastTransitionTime = p.LastTransitionTime
				}
			}
		}
		return c
	}
	osRelease, _ := os.ReadFile("/etc/os-release")
	addrs := make([]corev1.NodeAddress, 0, len(a.cfg.NodeIPs)+1)
	for _, ip := range a.cfg.NodeIPs {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: a.cfg.Hostname})
	machineID, _ := os.ReadFile("/etc/machine-id")
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, memPressure, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available",
				"KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, diskPressure, "KubeletHasDiskPressure", "kubelet has disk pressure",
				"KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, pidPressure, "KubeletHasInsufficientPID", "kubelet has insufficient PID available",
				"KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, true, "KubeletReady", "kubelet is posting ready status", "KubeletNotReady", ""),
		},
		Addresses:       addrs,
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: strings.TrimSpace(string(machineID)), BootID: strings.TrimSpace(string(bootID)),
			KernelVersion: kernelVersion(), OSImage: osImage(osRelease), OperatingSystem: goruntime.GOOS, Architecture: goruntime.GOARCH,
			ContainerRuntimeVersion: "orch://" + a.cfg.Version, KubeletVersion: KubeletVersion,
		},
	}
}

// significant strips what changes on every computation (heartbeat times,
// free-space jitter of ephemeral-storage is not part of it: capacity is
// the filesystem size) so two statuses compare by content.
func significant(s corev1.NodeStatus) corev1.NodeStatus {
	s = *s.DeepCopy()
	for i := range s.Conditions {
		s.Conditions[i].LastHeartbeatTime = metav1.Time{}
	}
	s.Images = nil
	return s
}

// update writes the Node status when it changed or is due, and hands the
// pod CIDR to the agent.
func (n *nodeStatus) update(ctx context.Context) error {
	a := n.a
	node, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n.registered = false
		if err := n.register(ctx); err != nil {
			return err
		}
		n.registered = true
		n.lastStatus = nil
		return nil
	}
	if err != nil {
		return err
	}
	a.setPodCIDR(ctx, node.Spec.PodCIDR)
	prev := n.lastStatus
	if prev == nil {
		prev = &node.Status
	}
	now := metav1.Now()
	st := n.compute(prev, now)
	due := time.Since(n.lastWrite) >= a.cfg.StatusReportFrequency
	if !due && n.lastStatus != nil && apiequality.Semantic.DeepEqual(significant(*n.lastStatus), significant(st)) {
		return nil
	}
	if !due && n.lastStatus == nil && apiequality.Semantic.DeepEqual(significant(node.Status), significant(roundTripNode(st))) {
		n.lastStatus = &node.Status
		return nil
	}
	b, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return err
	}
	if _, err := a.client.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.MergePatchType, b, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("patch node status: %w", err)
	}
	n.lastWrite = time.Now()
	rt := roundTripNode(st)
	n.lastStatus = &rt
	return nil
}

func roundTripNode(s corev1.NodeStatus) corev1.NodeStatus {
	b, err := json.Marshal(s)
	if err != nil {
		return s
	}
	var out corev1.NodeStatus
	if json.Unmarshal(b, &out) != nil {
		return s
	}
	return out
}

// errNoLeaseOwner is renewLease's answer while the Node does not exist yet.
var errNoLeaseOwner = errors.New("node lease: the Node is not registered yet")

// runLease renews the node's Lease every LeaseDuration/4.
func (a *Agent) runLease(ctx context.Context) error {
	period := a.cfg.LeaseDuration / 4
	var lease *coordinationv1.Lease
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		var err error
		wait := period
		lease, err = a.renewLease(ctx, leases, lease)
		switch {
		case errors.Is(err, errNoLeaseOwner):
			// First start: the Node is being registered alongside;
			// create the Lease as soon as it exists.
			wait = min(period, 250*time.Millisecond)
		case err != nil && ctx.Err() == nil:
			a.log.Warn("renew node lease", "err", err)
		}
		if err != nil {
			lease = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

type leaseClient interface {
	Get(ctx context.Context, name string, o metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(ctx context.Context, l *coordinationv1.Lease, o metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, l *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

func (a *Agent) renewLease(ctx context.Context, leases leaseClient, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(a.cfg.LeaseDuration / time.Second)
	if lease == nil {
		l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil, errNoLeaseOwner
			}
			if err != nil {
				return nil, fmt.Errorf("lease owner: %w", err)
			}
			holder := a.cfg.NodeName
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &now},
			}
			return leases.Create(ctx, l, metav1.CreateOptions{})
		}
		if err != nil {
			return nil, err
		}
		lease = l
	}
	l := lease.DeepCopy()
	holder := a.cfg.NodeName
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &secs, &now
	return leases.Update(ctx, l, metav1.UpdateOptions{})
}
