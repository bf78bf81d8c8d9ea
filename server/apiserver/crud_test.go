package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
)

func testPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:stable"}}},
	}
}

func TestPodCRUD(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pods := ts.client.CoreV1().Pods("default")
	p, err := pods.Create(ctx, testPod("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID == "" || p.ResourceVersion == "" || p.CreationTimestamp.IsZero() {
		t.Fatalf("system fields not set: %+v", p.ObjectMeta)
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyAlways || p.Spec.Containers[0].ImagePullPolicy != corev1.PullIfNotPresent {
		t.Fatalf("defaults not applied: %+v", p.Spec)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Fatalf("phase = %q", p.Status.Phase)
	}
	if _, err := pods.Create(ctx, testPod("a"), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v", err)
	}
	got, err := pods.Get(ctx, "a", metav1.GetOptions{})
	if err != nil || got.UID != p.UID {
		t.Fatalf("get: %v %v", err, got)
	}
	// Update with a stale resourceVersion conflicts.
	stale := got.DeepCopy()
	got.Labels["v"] = "2"
	upd, err := pods.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stale.Labels["v"] = "3"
	if _, err := pods.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	// Patches of every kind.
	if _, err := pods.Patch(ctx, "a", types.MergePatchType, []byte(`{"metadata":{"labels":{"m":"1"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Patch(ctx, "a", types.JSONPatchType, []byte(`[{"op":"add","path":"/metadata/labels/j","value":"1"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sp, err := pods.Patch(ctx, "a", types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sp.Spec.Containers[0].Image != "busybox:2" || sp.Labels["m"] != "1" || sp.Labels["j"] != "1" || sp.Labels["v"] != "2" {
		t.Fatalf("patched pod wrong: %v %v", sp.Spec.Containers, sp.Labels)
	}
	if sp.ResourceVersion == upd.ResourceVersion {
		t.Fatal("resourceVersion did not move")
	}
	// Changing an immutable pod field is refused with 422.
	if _, err := pods.Patch(ctx, "a", types.StrategicMergePatchType, []byte(`{"spec":{"restartPolicy":"Never"}}`), metav1.PatchOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("immutable field change: %v", err)
	}
	// Unbound pods go at once.
	if err := pods.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestValidationAndBadInput(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pods := ts.client.CoreV1().Pods("default")
	bad := testPod("Bad_Name")
	if _, err := pods.Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("invalid name: %v", err)
	}
	noCtr := testPod("x")
	noCtr.Spec.Containers = nil
	if _, err := pods.Create(ctx, noCtr, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("no containers: %v", err)
	}
	if _, err := ts.client.CoreV1().Pods("nope").Create(ctx, testPod("y"), metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("missing namespace: %v", err)
	}
	post := func(body string, ct string, query string) (int, metav1.Status) {
		req, _ := http.NewRequest(http.MethodPost, ts.http.URL+"/api/v1/namespaces/default/pods"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st metav1.Status
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &st)
		return resp.StatusCode, st
	}
	if code, st := post(`{"apiVersion":"v1","kind":"Pod",`, "application/json", ""); code != 400 || st.Kind != "Status" {
		t.Fatalf("malformed JSON: %d %+v", code, st)
	}
	if code, _ := post("apiVersion: v1\nkind: Pod\nmetadata: [", "application/yaml", ""); code != 400 {
		t.Fatalf("malformed YAML: %d", code)
	}
	if code, _ := post(`{"apiVersion":"v9","kind":"Pod","metadata":{"name":"z"}}`, "application/json", ""); code != 400 {
		t.Fatalf("wrong version: %d", code)
	}
	strict := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"s"},"spec":{"bogus":1,"containers":[{"name":"c","image":"i"}]}}`
	if code, st := post(strict, "application/json", "?fieldValidation=Strict"); code != 400 || !strings.Contains(st.Message, "bogus") {
		t.Fatalf("strict unknown field: %d %s", code, st.Message)
	}
	big := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":"` + strings.Repeat("x", 4<<20) + `"}}`
	req, _ := http.NewRequest(http.MethodPost, ts.http.URL+"/api/v1/namespaces/default/configmaps", strings.NewReader(big))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", resp.StatusCode)
	}
	// Nothing was stored by the failed requests.
	l, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 0 {
		t.Fatalf("pods after bad input: %v %d", err, len(l.Items))
	}
	if _, err := ts.client.CoreV1().ConfigMaps("default").Get(ctx, "big", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("oversized configmap stored: %v", err)
	}
}

func TestListPagingAndSelectors(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pods := ts.client.CoreV1().Pods("default")
	for i := 0; i < 25; i++ {
		p := testPod(fmt.Sprintf("p%02d", i))
		if i%2 == 0 {
			p.Labels["even"] = "true"
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	opts := metav1.ListOptions{Limit: 10}
	for {
		l, err := pods.List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range l.Items {
			names = append(names, p.Name)
		}
		// A write between pages does not show up: paging is consistent.
		if _, err := pods.Create(ctx, testPod(fmt.Sprintf("late%d", len(names))), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	if len(names) != 25 {
		t.Fatalf("paged list got %d: %v", len(names), names)
	}
	even, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "even=true", Limit: 5})
	if err != nil || len(even.Items) != 5 || even.Continue == "" {
		t.Fatalf("label selector page: %v %d %q", err, len(even.Items), even.Continue)
	}
	one, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=p03"})
	if err != nil || len(one.Items) != 1 {
		t.Fatalf("field selector: %v %d", err, len(one.Items))
	}
	if _, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.bogus=1"}); !apierrors.IsBadRequest(err) {
		t.Fatalf("unsupported field selector: %v", err)
	}
}

func TestWatch(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods := ts.client.CoreV1().Pods("default")
	l, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := pods.Create(ctx, testPod("w"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Patch(ctx, "w", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"other"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []watch.EventType{watch.Added, watch.Deleted}
	for _, typ := range want {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != typ {
				t.Fatalf("event %s, want %s: %+v", ev.Type, typ, ev.Object)
			}
		case <-ctx.Done():
			t.Fatalf("no %s event", typ)
		}
	}
}

func TestServicesAllocation(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	svcs := ts.client.CoreV1().Services("default")
	k, err := svcs.Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || k.Spec.ClusterIP != "10.43.0.1" {
		t.Fatalf("kubernetes service: %v %+v", err, k)
	}
	seen := map[string]bool{"10.43.0.1": true}
	for i := 0; i < 5; i++ {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}}}
		out, err := svcs.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if seen[out.Spec.ClusterIP] || out.Spec.Ports[0].NodePort < 30000 {
			t.Fatalf("bad allocation %s %d", out.Spec.ClusterIP, out.Spec.Ports[0].NodePort)
		}
		seen[out.Spec.ClusterIP] = true
	}
	dup := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dup"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.1", Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := svcs.Create(ctx, dup, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("duplicate IP: %v", err)
	}
}

func TestLegacyDeployment(t *testing.T) {
	ts := newTestServer(t)
	body := `{"apiVersion":"extensions/v1beta1","kind":"Deployment","metadata":{"name":"web"},
"spec":{"replicas":1,"template":{"metadata":{"labels":{"name":"web"}},"spec":{"containers":[{"name":"web","image":"web-python:v1"}]}}}}`
	resp, err := http.Post(ts.http.URL+"/apis/extensions/v1beta1/namespaces/default/deployments", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	d, err := ts.client.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Selector == nil || d.Spec.Selector.MatchLabels["name"] != "web" {
		t.Fatalf("selector not defaulted from template: %+v", d.Spec.Selector)
	}
	var _ = appsv1.Deployment{}
}

func TestServerSideApply(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	cms := ts.client.CoreV1().ConfigMaps("default")
	cfg := applycorev1.ConfigMap("cfg", "default").WithData(map[string]string{"a": "1"})
	out, err := cms.Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Data["a"] != "1" || len(out.ManagedFields) == 0 {
		t.Fatalf("apply create: %+v", out)
	}
	// Another manager changing the same field conflicts unless forced.
	other := applycorev1.ConfigMap("cfg", "default").WithData(map[string]string{"a": "2"})
	if _, err := cms.Apply(ctx, other, metav1.ApplyOptions{FieldManager: "two"}); !apierrors.IsConflict(err) {
		t.Fatalf("conflicting apply: %v", err)
	}
	out, err = cms.Apply(ctx, other, metav1.ApplyOptions{FieldManager: "two", Force: true})
	if err != nil || out.Data["a"] != "2" {
		t.Fatalf("forced apply: %v %+v", err, out)
	}
}

func TestJSONListMatchesSerializer(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	for i := 0; i < 300; i++ { // above parallelMin: the parallel path
		if _, err := ts.client.CoreV1().Pods("default").Create(ctx, testPod(fmt.Sprintf("j%03d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(accept string) []byte {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/api/v1/namespaces/default/pods", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	fast := get("application/json")
	var l corev1.PodList
	if err := json.Unmarshal(fast, &l); err != nil {
		t.Fatal(err)
	}
	if l.Kind != "PodList" || l.APIVersion != "v1" || len(l.Items) != 300 || l.ResourceVersion == "" {
		t.Fatalf("list: %s %s %d %q", l.Kind, l.APIVersion, len(l.Items), l.ResourceVersion)
	}
	// The serializer's own encoding (pretty output takes that path) holds
	// the same list.
	var slow corev1.PodList
	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/api/v1/namespaces/default/pods?pretty=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &slow); err != nil {
		t.Fatal(err)
	}
	fb, _ := json.Marshal(l)
	sb, _ := json.Marshal(slow)
	if !bytes.Equal(fb, sb) {
		t.Fatal("fast JSON list differs from the serializer's")
	}
}

func TestServerSideApplyLegacyDeployment(t *testing.T) {
	ts := newTestServer(t)
	body := `apiVersion: extensions/v1beta1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  template:
    metadata:
      labels: {name: web}
    spec:
      containers:
      - {name: web, image: web-python:v1}
`
	req, _ := http.NewRequest(http.MethodPatch, ts.http.URL+"/apis/extensions/v1beta1/namespaces/default/deployments/web?fieldManager=test", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/apply-patch+yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("apply: %d %s", resp.StatusCode, b)
	}
	d, err := ts.client.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || d.Spec.Selector == nil || d.Spec.Selector.MatchLabels["name"] != "web" {
		t.Fatalf("selector not defaulted: %v %+v", err, d)
	}
}

func TestBindingAndEviction(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pods := ts.client.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, testPod("b"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "default"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	if err := pods.Bind(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := pods.Get(ctx, "b", metav1.GetOptions{})
	if err != nil || p.Spec.NodeName != "n1" {
		t.Fatalf("bound pod: %v %q", err, p.Spec.NodeName)
	}
	if err := pods.Bind(ctx, bind, metav1.CreateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("second bind: %v", err)
	}
	wrong := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	req := ts.client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("b").SubResource("binding").Body(wrong)
	if err := req.Do(ctx).Error(); !apierrors.IsBadRequest(err) {
		t.Fatalf("binding naming another pod: %v", err)
	}
	zero := int64(0)
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "default"}, DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &zero}}
	if err := ts.client.PolicyV1().Evictions("default").Evict(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("evicted pod: %v", err)
	}
}

// TestEventsV1 creates an events.k8s.io/v1 Event and reads it as a Table:
// the core/v1 Event hooks must not be applied to it.
func TestEventsV1(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "e1"}, EventTime: metav1.NewMicroTime(time.Now()),
		ReportingController: "orch.dev/test", ReportingInstance: "i", Action: "Test", Reason: "Tested",
		Regarding: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "default"}, Type: corev1.EventTypeNormal,
	}
	if _, err := ts.client.EventsV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/apis/events.k8s.io/v1/namespaces/default/events/e1", nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"kind":"Table"`) {
		t.Fatalf("table: %d %s", resp.StatusCode, body)
	}
}

// TestCreateInTerminatingNamespace: creates are refused once the namespace
// is being deleted, also after an earlier create cached its state.
func TestCreateInTerminatingNamespace(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	if _, err := ts.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := ts.client.CoreV1().ConfigMaps("gone")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ts.client.CoreV1().Namespaces().Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "b"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("create in a terminating namespace: %v", err)
	}
	if _, err := ts.client.CoreV1().ConfigMaps("nowhere").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("create in a missing namespace: %v", err)
	}
}
