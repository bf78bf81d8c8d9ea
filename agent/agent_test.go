package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/orch-dev/orch/internal/syncbuf"
)

func TestNodeRegistrationAndLease(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Labels = map[string]string{"tier": "edge"}
		c.Taints = []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
		c.ControlPlane = true
	})
	ctx := context.Background()
	var node *corev1.Node
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		n, err := h.client.CoreV1().Nodes().Get(ctx, h.node, metav1.GetOptions{})
		if err == nil && len(n.Status.Conditions) > 0 && n.Spec.PodCIDR != "" {
			node = n
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if node == nil {
		t.Fatal("node not registered with status and pod CIDR")
	}
	for k, v := range map[string]string{"kubernetes.io/hostname": h.node, "kubernetes.io/os": "linux", "beta.kubernetes.io/os": "linux",
		"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true", "tier": "edge"} {
		if node.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, node.Labels[k], v)
		}
	}
	if len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Key != "dedicated" {
		t.Errorf("taints %v", node.Spec.Taints)
	}
	if node.Status.Capacity.Pods().Value() != 110 || node.Status.Capacity.Cpu().IsZero() || node.Status.Capacity.Memory().IsZero() ||
		node.Status.Capacity.StorageEphemeral().IsZero() {
		t.Errorf("capacity %v", node.Status.Capacity)
	}
	info := node.Status.NodeInfo
	if info.KubeletVersion != KubeletVersion || !strings.HasPrefix(info.ContainerRuntimeVersion, "orch://") || info.KernelVersion == "" || info.Architecture == "" {
		t.Errorf("nodeInfo %+v", info)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.Reason == "KubeletReady" {
			ready = true
		}
	}
	if !ready {
		t.Errorf("conditions %+v", node.Status.Conditions)
	}
	if len(node.Status.Addresses) != 2 || node.Status.Addresses[0].Address != "127.0.0.1" {
		t.Errorf("addresses %v", node.Status.Addresses)
	}
	// The lease is renewed every LeaseDuration/4 (1s here).
	var first *metav1.MicroTime
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l, err := h.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, h.node, metav1.GetOptions{})
		if err == nil && l.Spec.RenewTime != nil {
			if first == nil {
				first = l.Spec.RenewTime
				if *l.Spec.HolderIdentity != h.node || len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != node.UID {
					t.Errorf("lease %+v", l)
				}
			} else if l.Spec.RenewTime.After(first.Time) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("lease not renewed")
}

func TestPodRunsWithEnvVolumesAndDNS(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	if _, err := h.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Data: map[string]string{"color": "blue", "index.html": "<h1>hi</h1>"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"},
		Data: map[string][]byte{"password": []byte("s3cr3t")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	redis, err := h.client.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis-master"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 6379, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Command: sh("echo from-init > /work/init.txt"),
				Resources:    corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
				VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}}},
			Containers: []corev1.Container{{
				Name: "app", Command: sh("sleep 3600"),
				Env: []corev1.EnvVar{
					{Name: "COLOR", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "color"}}},
					{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
					{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "GREETING", Value: "color=$(COLOR)"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "html", MountPath: "/usr/share/nginx/html"}, {Name: "work", MountPath: "/work"},
					{Name: "secret", MountPath: "/etc/secret"}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/work/init.txt"}}}, PeriodSeconds: 1},
				Resources:      corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
			}},
			Volumes: []corev1.Volume{
				{Name: "html", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
				{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		}})
	p := h.waitPod("default", "web", 30*time.Second, "Running and Ready", podRunningReady)
	if p.Status.PodIP == "" || !strings.HasPrefix(p.Status.PodIP, "10.42.") || p.Status.HostIP != "127.0.0.1" || p.Status.StartTime == nil {
		t.Errorf("ips/start: %s", statusString(p))
	}
	if p.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("qos %s", p.Status.QOSClass)
	}
	cs := containerStatusOf(p, "app")
	if !strings.HasPrefix(cs.ContainerID, "orch://") || cs.ImageID == "" || cs.Started == nil || !*cs.Started || cs.State.Running == nil {
		t.Errorf("container status %+v", cs)
	}
	if ics := containerStatusOf(p, "init"); ics.State.Terminated == nil || ics.State.Terminated.Reason != "Completed" {
		t.Errorf("init status %+v", ics)
	}
	for _, c := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
		found := false
		for _, pc := range p.Status.Conditions {
			if pc.Type == c && pc.Status == corev1.ConditionTrue {
				found = true
			}
		}
		if !found {
			t.Errorf("condition %s not true: %+v", c, p.Status.Conditions)
		}
	}
	env := h.exec(p, "app", "env")
	for _, want := range []string{"COLOR=blue", "PW=s3cr3t", "MY_IP=" + p.Status.PodIP, "GREETING=color=blue",
		"REDIS_MASTER_SERVICE_HOST=" + redis.Spec.ClusterIP, "REDIS_MASTER_SERVICE_PORT=6379",
		"REDIS_MASTER_PORT=tcp://" + redis.Spec.ClusterIP + ":6379", "REDIS_MASTER_PORT_6379_TCP_PROTO=tcp",
		"REDIS_MASTER_PORT_6379_TCP_ADDR=" + redis.Spec.ClusterIP, "KUBERNETES_SERVICE_HOST=10.43.0.1", "KUBERNETES_SERVICE_PORT=443"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
	if got := h.exec(p, "app", "cat", "/usr/share/nginx/html/index.html"); got != "<h1>hi</h1>" {
		t.Errorf("configMap file = %q", got)
	}
	if got := h.exec(p, "app", "cat", "/etc/secret/password"); got != "s3cr3t" {
		t.Errorf("secret file = %q", got)
	}
	if got := h.exec(p, "app", "cat", "/work/init.txt"); got != "from-init\n" {
		t.Errorf("init output = %q", got)
	}
	if got := h.exec(p, "app", "cat", "/etc/resolv.conf"); got != "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local example.test\noptions ndots:5\n" {
		t.Errorf("resolv.conf = %q", got)
	}
	if got := h.exec(p, "app", "cat", "/etc/hosts"); !strings.Contains(got, p.Status.PodIP+"\tweb\n") {
		t.Errorf("hosts = %q", got)
	}
	if got := h.exec(p, "app", "hostname"); got != "web\n" {
		t.Errorf("hostname = %q", got)
	}
	// The configMap volume follows the object.
	cm, _ := h.client.CoreV1().ConfigMaps("default").Get(ctx, "cfg", metav1.GetOptions{})
	cm.Data["index.html"] = "<h1>v2</h1>"
	if _, err := h.client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for h.exec(p, "app", "cat", "/usr/share/nginx/html/index.html") != "<h1>v2</h1>" {
		if time.Now().After(deadline) {
			t.Fatal("configMap volume not updated")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range []string{"Pulled", "Created", "Started"} {
		h.waitEvent("default", "web", r, 5*time.Second)
	}
	// Logs through the node API.
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/containerLogs/default/web/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("logs of unknown container: %d", resp.StatusCode)
	}
	_ = pod
}

func TestAgentRestartKeepsPodsRunning(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "keep"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("echo hello; sleep 3600")}}}})
	p := h.waitPod("default", "keep", 30*time.Second, "Running", podRunningReady)
	id := containerStatusOf(p, "c").ContainerID
	h.stop()
	h.startAgent()
	time.Sleep(2 * time.Second)
	p = h.waitPod("default", "keep", 10*time.Second, "Running", podRunningReady)
	cs := containerStatusOf(p, "c")
	if cs.ContainerID != id || cs.RestartCount != 0 {
		t.Fatalf("agent restart touched the container: %s -> %s restarts %d", id, cs.ContainerID, cs.RestartCount)
	}
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/containerLogs/default/keep/c?tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello\n" {
		t.Errorf("logs = %q (%d)", b, resp.StatusCode)
	}
}

func TestCrashLoopBackOffGrows(t *testing.T) {
	// A 1 s base (delays ~0, 1, 2, 4 s): the restarts are seen by polling
	// the status, whose lag on a loaded machine (race detector, parallel
	// packages) reached 0.9 s and made the 1 s and 2 s gaps of a 0.5 s
	// base look alike.
	h := newHarness(t, func(c *Config) { c.BackoffBase = time.Second })
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("echo boom; exit 3")}}}})
	var starts []time.Time
	seenBackoff := false
	deadline := time.Now().Add(40 * time.Second)
	last := int32(-1)
	for time.Now().Before(deadline) && len(starts) < 5 {
		p, err := h.client.CoreV1().Pods("default").Get(context.Background(), "crash", metav1.GetOptions{})
		if err == nil && len(p.Status.ContainerStatuses) == 1 {
			cs := p.Status.ContainerStatuses[0]
			if cs.RestartCount != last {
				last = cs.RestartCount
				starts = append(starts, time.Now())
			}
			if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
				seenBackoff = true
				if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 3 || lt.Reason != "Error" {
					t.Errorf("lastState %+v", cs.LastTerminationState)
				}
				if p.Status.Phase != corev1.PodRunning {
					t.Errorf("phase of crash-looping pod = %s", p.Status.Phase)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seenBackoff || len(starts) < 5 {
		t.Fatalf("backoff seen %v, restarts observed %d", seenBackoff, len(starts))
	}
	// Each gap grows.
	for i := 3; i < len(starts); i++ {
		if starts[i].Sub(starts[i-1]) <= starts[i-1].Sub(starts[i-2]) {
			t.Errorf("back-off did not grow: gaps %v %v", starts[i-1].Sub(starts[i-2]), starts[i].Sub(starts[i-1]))
		}
	}
	h.waitEvent("default", "crash", "BackOff", 5*time.Second)
}

func TestOOMKilledAndNeverRestart(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "oom"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c",
			Command:   sh("head -c 400m /dev/zero | tail"),
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}}}}})
	p := h.waitPod("default", "oom", 60*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	cs := containerStatusOf(p, "c")
	if cs.State.Terminated == nil || cs.State.Terminated.Reason != "OOMKilled" || cs.RestartCount != 0 {
		t.Fatalf("status %s", statusString(p))
	}
	if p.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("qos %s", p.Status.QOSClass)
	}
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "done"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyOnFailure, Containers: []corev1.Container{{Name: "c", Command: sh("exit 0")}}}})
	p = h.waitPod("default", "done", 30*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if cs := containerStatusOf(p, "c"); cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" {
		t.Errorf("status %s", statusString(p))
	}
}

func TestLivenessProbeRestarts(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sick"},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: new(int64), Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600"),
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/nonexistent"}}},
				PeriodSeconds: 1, FailureThreshold: 2}}}}})
	p := h.waitPod("default", "sick", 40*time.Second, "a restart", func(p *corev1.Pod) bool {
		cs := containerStatusOf(p, "c")
		return cs != nil && cs.RestartCount >= 1
	})
	if cs := containerStatusOf(p, "c"); cs.LastTerminationState.Terminated == nil {
		t.Errorf("no lastState after liveness restart: %s", statusString(p))
	}
	h.waitEvent("default", "sick", "Unhealthy", 5*time.Second)
	e := h.waitEvent("default", "sick", "Killing", 5*time.Second)
	if !strings.Contains(e.Message, "failed liveness probe") {
		t.Errorf("Killing event: %s", e.Message)
	}
}

func TestGracefulDeleteRunsPreStop(t *testing.T) {
	h := newHarness(t, nil)
	marker := filepath.Join(t.TempDir(), "prestop")
	grace := int64(10)
	hp := corev1.HostPathDirectory
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bye"},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{Name: "c",
			Command:      sh("trap 'exit 0' TERM; while true; do sleep 0.1; done"),
			VolumeMounts: []corev1.VolumeMount{{Name: "m", MountPath: "/m"}},
			Lifecycle:    &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: sh("echo stopped > /m/prestop")}}},
		}}, Volumes: []corev1.Volume{{Name: "m", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Dir(marker), Type: &hp}}}}}})
	p := h.waitPod("default", "bye", 30*time.Second, "Running", podRunningReady)
	uid := p.UID
	start := time.Now()
	if err := h.client.CoreV1().Pods("default").Delete(context.Background(), "bye", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := h.client.CoreV1().Pods("default").Get(context.Background(), "bye", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod not deleted by the agent")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("graceful stop took %s: SIGTERM not delivered?", took)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "stopped\n" {
		t.Errorf("preStop did not run: %q %v", b, err)
	}
	for _, st := range h.rt.ListContainers() {
		if st.PodUID == string(uid) {
			t.Errorf("container %s of the deleted pod left", st.ID)
		}
	}
	if _, err := os.Stat(filepath.Join(h.base, "agent", "pod-data", string(uid))); !os.IsNotExist(err) {
		t.Errorf("pod dir left: %v", err)
	}
	h.waitEvent("default", "bye", "Killing", 5*time.Second)
}

func TestBadInputReasons(t *testing.T) {
	h := newHarness(t, nil)
	never := corev1.PullNever
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "noimage"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none:v1", ImagePullPolicy: never}}}})
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nocm"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600"), Env: []corev1.EnvVar{{Name: "X",
			ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k"}}}}}}}})
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "badcmd"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: []string{"/no/such/binary"}}}}})
	// A registry on a closed loopback port: the pull fails without leaving the machine.
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pullfail"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "127.0.0.1:1/none:v1"}}}})
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "good"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600")}}}})
	waitReason := func(name string, reasons ...string) {
		h.waitPod("default", name, 30*time.Second, strings.Join(reasons, "|"), func(p *corev1.Pod) bool {
			cs := containerStatusOf(p, "c")
			if cs == nil {
				return false
			}
			for _, r := range reasons {
				if (cs.State.Waiting != nil && cs.State.Waiting.Reason == r) || (cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == r) {
					return true
				}
			}
			return false
		})
	}
	waitReason("noimage", "ErrImageNeverPull")
	waitReason("nocm", "CreateContainerConfigError")
	waitReason("badcmd", "RunContainerError", "ContainerCannotRun", "CrashLoopBackOff")
	waitReason("pullfail", "ErrImagePull", "ImagePullBackOff")
	waitReason("pullfail", "ImagePullBackOff")
	h.waitPod("default", "good", 30*time.Second, "Running", podRunningReady)
	h.waitEvent("default", "noimage", "ErrImageNeverPull", 5*time.Second)
	// Fixing the input lets the pod start.
	if _, err := h.client.CoreV1().ConfigMaps("default").Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "missing"},
		Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitPod("default", "nocm", 30*time.Second, "Running after the ConfigMap appeared", podRunningReady)
}

func TestHostNetworkPod(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hostnet"},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600")}}}})
	p := h.waitPod("default", "hostnet", 30*time.Second, "Running", podRunningReady)
	if p.Status.PodIP != "127.0.0.1" {
		t.Errorf("host-network pod IP %q, want the node IP", p.Status.PodIP)
	}
	// Host network, Default DNS (ClusterFirst falls back), the host's hosts file.
	if got := h.exec(p, "c", "cat", "/etc/resolv.conf"); got != "nameserver 192.0.2.53\nsearch example.test\n" {
		t.Errorf("resolv.conf = %q", got)
	}
	if got := h.exec(p, "c", "cat", "/etc/hosts"); got != "127.0.0.1 localhost\n" {
		t.Errorf("hosts = %q", got)
	}
	host, _ := os.Hostname()
	if got := h.exec(p, "c", "hostname"); got != host+"\n" {
		t.Errorf("hostname = %q, want %q", got, host)
	}
}

func TestHTTPAndTCPProbesAndPostStart(t *testing.T) {
	h := newHarness(t, nil)
	port := 20000 + int(time.Now().UnixNano()%20000)
	// Host network so the probes (from the node) reach the server on loopback.
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "httpd"},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "c",
			Command: sh("mkdir -p /www && echo ok > /www/healthz && exec httpd -f -h /www -p 127.0.0.1:" + strconv.Itoa(port)),
			Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
				PeriodSeconds: 1},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}},
				PeriodSeconds: 1, FailureThreshold: 3},
			StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}},
				PeriodSeconds: 1, FailureThreshold: 30},
			Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: sh("echo started > /tmp/poststart")}}},
		}}}})
	p := h.waitPod("default", "httpd", 30*time.Second, "Ready", podRunningReady)
	if got := h.exec(p, "c", "cat", "/tmp/poststart"); got != "started\n" {
		t.Errorf("postStart output %q", got)
	}
	// Still healthy a few periods later: no restarts.
	time.Sleep(3 * time.Second)
	p = h.waitPod("default", "httpd", 5*time.Second, "Ready", podRunningReady)
	if cs := containerStatusOf(p, "c"); cs.RestartCount != 0 || cs.Started == nil || !*cs.Started {
		t.Errorf("status %s", statusString(p))
	}
	// Breaking the health page makes the pod unready (readiness only).
	h.exec(p, "c", "rm", "/www/healthz")
	h.waitPod("default", "httpd", 15*time.Second, "not Ready", func(p *corev1.Pod) bool {
		cs := containerStatusOf(p, "c")
		return cs != nil && !cs.Ready && cs.RestartCount == 0 && cs.State.Running != nil
	})
	e := h.waitEvent("default", "httpd", "Unhealthy", 5*time.Second)
	if !strings.Contains(e.Message, "Readiness probe failed") || !strings.Contains(e.Message, "404") {
		t.Errorf("Unhealthy event: %s", e.Message)
	}
}

func TestTerminationMessage(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "msg"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
			{Name: "file", Command: sh("echo 'bye bye' > /dev/termination-log; exit 2")},
			{Name: "logs", Command: sh("echo from-log; exit 1"), TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError},
			{Name: "custom", Command: sh("echo custom > /tmp/msg"), TerminationMessagePath: "/tmp/msg"},
		}}})
	p := h.waitPod("default", "msg", 30*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	for name, want := range map[string]string{"file": "bye bye\n", "logs": "from-log\n", "custom": "custom\n"} {
		cs := containerStatusOf(p, name)
		if cs.State.Terminated == nil || cs.State.Terminated.Message != want {
			t.Errorf("%s: %s", name, statusString(p))
		}
	}
}

func TestNodeAPIExec(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ex"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600")}}}})
	h.waitPod("default", "ex", 30*time.Second, "Running", podRunningReady)
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	run := func(stdin string, cmd ...string) (string, string, error) {
		q := url.Values{"command": cmd, "stdout": {"true"}, "stderr": {"true"}}
		if stdin != "" {
			q.Set("stdin", "true")
		}
		ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{Host: srv.URL}, "GET", srv.URL+"/exec/default/ex/c?"+q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		opts := remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}
		if stdin != "" {
			opts.Stdin = strings.NewReader(stdin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = ex.StreamWithContext(ctx, opts)
		return out.String(), errOut.String(), err
	}
	out, errOut, err := run("", "sh", "-c", "echo hi; echo oops >&2; exit 3")
	var exitErr utilexec.ExitError
	if out != "hi\n" || errOut != "oops\n" || !errors.As(err, &exitErr) || exitErr.ExitStatus() != 3 {
		t.Fatalf("exec: out %q err %q error %v", out, errOut, err)
	}
	out, _, err = run("piped input", "cat")
	if err != nil || out != "piped input" {
		t.Fatalf("exec with stdin: %q %v", out, err)
	}
	resp, err := http.Get(srv.URL + "/exec/default/ex/c?command=true&stdout=true")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP exec: %d", resp.StatusCode)
	}
}

func TestNodeAPIAttach(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "att"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c",
			Command: sh("while read l; do echo got:$l; done"), Stdin: true, StdinOnce: true}}}})
	h.waitPod("default", "att", 30*time.Second, "Running", podRunningReady)
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{Host: srv.URL}, "GET", srv.URL+"/attach/default/att/c?stdin=true&stdout=true&stderr=true")
	if err != nil {
		t.Fatal(err)
	}
	// The streams are written by client-go's goroutines, which may still
	// be copying when StreamWithContext returns: read them under a lock
	// and give the tail of the output a moment.
	var out, errOut syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("one\ntwo\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); out.String() != "got:one\ngot:two\n" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != "got:one\ngot:two\n" {
		t.Fatalf("attach output %q", out.String())
	}
	// stdinOnce: the end of the session closed its stdin, so it completes.
	h.waitPod("default", "att", 20*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
}

// TestPreviousLogsWhileRestarting: `logs --previous` of a container that
// restarts all the time answers the previous instance's output or an
// error, never an empty log (it once got the container being removed as
// the previous one, and answered 200 with nothing).
func TestPreviousLogsWhileRestarting(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.BackoffBase, c.BackoffMax = 100*time.Millisecond, 200*time.Millisecond })
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("echo boom; exit 3")}}}})
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	deadline := time.Now().Add(6 * time.Second)
	ok := 0
	for time.Now().Before(deadline) {
		resp, err := http.Get(srv.URL + "/containerLogs/default/crash/c?previous=true")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			if string(b) != "boom\n" {
				t.Fatalf("logs --previous answered 200 with %q", b)
			}
			ok++
		}
		time.Sleep(2 * time.Millisecond)
	}
	if ok == 0 {
		t.Fatal("logs --previous never answered")
	}
}
