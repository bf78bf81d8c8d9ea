package apiserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// referenceSMP applies a strategic merge patch to the JSON of cur
// client-side: the result the server must store.
func referenceSMP(t *testing.T, cur runtime.Object, patch string, into runtime.Object) runtime.Object {
	t.Helper()
	b, err := json.Marshal(cur)
	if err != nil {
		t.Fatal(err)
	}
	out, err := strategicpatch.StrategicMergePatch(b, []byte(patch), into)
	if err != nil {
		t.Fatalf("reference patch %s: %v", patch, err)
	}
	if err := json.Unmarshal(out, into); err != nil {
		t.Fatal(err)
	}
	return into
}

// TestStrategicMergePatch patches pods (and their status), a Deployment, a
// Secret and a Service with strategic merge patches of every directive and
// compares what the server stored with the patch applied client-side.
func TestStrategicMergePatch(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	core, apps := ts.client.CoreV1(), ts.client.AppsV1()

	pod := testPod("p")
	pod.Annotations = map[string]string{"keep": "1", "drop": "2"}
	pod.Spec.Containers = []corev1.Container{
		{Name: "a", Image: "busybox:1", Env: []corev1.EnvVar{{Name: "X", Value: "1"}}, Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}}},
		{Name: "b", Image: "busybox:1"},
	}
	pod.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
	if _, err := core.Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "d"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "d"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
			},
		},
	}
	if _, err := apps.Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Data: map[string][]byte{"a": []byte("one")}}
	if _, err := core.Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "v"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "d"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
	}}
	if _, err := core.Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	type step struct {
		name, patch string
		get         func() (runtime.Object, error)
		patchFn     func(string) (runtime.Object, error)
		empty       func() runtime.Object
		sub         string
	}
	podGet := func() (runtime.Object, error) { return core.Pods("default").Get(ctx, "p", metav1.GetOptions{}) }
	podPatch := func(sub string) func(string) (runtime.Object, error) {
		return func(p string) (runtime.Object, error) {
			var subs []string
			if sub != "" {
				subs = []string{sub}
			}
			return core.Pods("default").Patch(ctx, "p", types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{}, subs...)
		}
	}
	newPod := func() runtime.Object { return &corev1.Pod{} }
	steps := []step{
		{name: "labels and annotations", patch: `{"metadata":{"labels":{"new":"x"},"annotations":{"drop":null,"keep":"3"}}}`},
		{name: "container by merge key", patch: `{"spec":{"containers":[{"name":"b","image":"busybox:2"}]}}`},
		{name: "tolerations replaced", patch: `{"spec":{"tolerations":[{"key":"other","operator":"Exists","effect":"NoExecute","tolerationSeconds":30}]}}`},
		{name: "status conditions by type", sub: "status", patch: `{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"},{"type":"PodScheduled","status":"True"}]}}`},
		{name: "status condition merged", sub: "status", patch: `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Down"}]}}`},
		{name: "null patch", patch: `null`},
	}
	for i := range steps {
		steps[i].get, steps[i].patchFn, steps[i].empty = podGet, podPatch(steps[i].sub), newPod
	}
	depStep := func(name, patch string) step {
		return step{name: name, patch: patch,
			get: func() (runtime.Object, error) { return apps.Deployments("default").Get(ctx, "d", metav1.GetOptions{}) },
			patchFn: func(p string) (runtime.Object, error) {
				return apps.Deployments("default").Patch(ctx, "d", types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{})
			},
			empty: func() runtime.Object { return &appsv1.Deployment{} }}
	}
	steps = append(steps,
		step{name: "deployment replicas and image", patch: `{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}`,
			get: func() (runtime.Object, error) { return apps.Deployments("default").Get(ctx, "d", metav1.GetOptions{}) },
			patchFn: func(p string) (runtime.Object, error) {
				return apps.Deployments("default").Patch(ctx, "d", types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{})
			},
			empty: func() runtime.Object { return &appsv1.Deployment{} }},
		depStep("deployment env merged by name", `{"spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"Y","value":"2"}]}]}}}}`),
		depStep("deployment second container", `{"spec":{"template":{"spec":{"containers":[{"name":"d","image":"busybox:1","env":[{"name":"X","value":"1"},{"name":"Z","value":"3"}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}]}}}}`),
		depStep("deployment delete directive", `{"spec":{"template":{"spec":{"containers":[{"name":"d","env":[{"name":"X","$patch":"delete"}]}]}}}}`),
		depStep("deployment element order", `{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"d"},{"name":"c"}],"containers":[{"name":"c","image":"busybox:3"}]}}}}`),
		depStep("deployment strategy replaced", `{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}`),
		step{name: "secret data and stringData", patch: `{"data":{"b":"dHdv"},"stringData":{"c":"three"}}`,
			get: func() (runtime.Object, error) { return core.Secrets("default").Get(ctx, "s", metav1.GetOptions{}) },
			patchFn: func(p string) (runtime.Object, error) {
				return core.Secrets("default").Patch(ctx, "s", types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{})
			},
			empty: func() runtime.Object { return &corev1.Secret{} }},
		step{name: "service port by merge key", patch: `{"spec":{"ports":[{"port":80,"targetPort":"web"},{"name":"https","port":443,"protocol":"TCP","targetPort":8443}]}}`,
			get: func() (runtime.Object, error) { return core.Services("default").Get(ctx, "v", metav1.GetOptions{}) },
			patchFn: func(p string) (runtime.Object, error) {
				return core.Services("default").Patch(ctx, "v", types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{})
			},
			empty: func() runtime.Object { return &corev1.Service{} }},
	)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			cur, err := st.get()
			if err != nil {
				t.Fatal(err)
			}
			want := referenceSMP(t, cur, st.patch, st.empty())
			got, err := st.patchFn(st.patch)
			if err != nil {
				t.Fatalf("patch: %v", err)
			}
			// What the server sets on every write is not the patch's doing.
			for _, o := range []runtime.Object{want, got} {
				m := o.(metav1.Object)
				m.SetResourceVersion("")
				m.SetManagedFields(nil)
				m.SetGeneration(0)
			}
			if s, ok := want.(*corev1.Secret); ok {
				// stringData is folded into data on write.
				for k, v := range s.StringData {
					s.Data[k] = []byte(v)
				}
				s.StringData = nil
			}
			want.GetObjectKind().SetGroupVersionKind(got.GetObjectKind().GroupVersionKind())
			if !apiequality.Semantic.DeepEqual(want, got) {
				wb, _ := json.Marshal(want)
				gb, _ := json.Marshal(got)
				t.Fatalf("patch %s\n got %s\nwant %s", st.patch, gb, wb)
			}
		})
	}
}

// TestStrategicMergePatchBadInput: malformed patches, unknown and duplicate
// fields under each field validation, patches changing the kind or version
// or giving a field the wrong type; nothing of a refused patch is stored.
func TestStrategicMergePatchBadInput(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	if _, err := ts.client.CoreV1().Pods("default").Create(ctx, testPod("p"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	send := func(patch, validation string) (int, string, http.Header) {
		t.Helper()
		u := ts.http.URL + "/api/v1/namespaces/default/pods/p"
		if validation != "" {
			u += "?fieldValidation=" + validation
		}
		req, err := http.NewRequest(http.MethodPatch, u, strings.NewReader(patch))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", string(types.StrategicMergePatchType))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, tc := range []struct {
		name, patch, validation string
		code                    int
		body, warning           string
	}{
		{"malformed", `{"metadata":`, "", 400, "unable to apply patch", ""},
		{"not an object", `[1,2]`, "", 400, "unable to apply patch", ""},
		{"unknown field strict", `{"spec":{"bogus":1}}`, "Strict", 400, `unknown field \"spec.bogus\"`, ""},
		{"unknown field warn", `{"spec":{"bogus":1}}`, "Warn", 200, "", `unknown field \"spec.bogus\"`},
		{"unknown field ignore", `{"spec":{"bogus":1}}`, "Ignore", 200, "", ""},
		{"duplicate field strict", `{"metadata":{"labels":{"a":"1"},"labels":{"b":"2"}}}`, "Strict", 400, `duplicate field \"metadata.labels\"`, ""},
		{"duplicate field warn", `{"metadata":{"labels":{"a":"1"},"labels":{"b":"2"}}}`, "Warn", 200, "", `duplicate field \"metadata.labels\"`},
		{"kind changed", `{"kind":"Service"}`, "", 400, "the kind in the data (Service) does not match the expected kind (Pod)", ""},
		{"version changed", `{"apiVersion":"v2"}`, "", 400, `version \"v2\"`, ""},
		{"wrong type", `{"spec":{"containers":"x"}}`, "", 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, h := send(tc.patch, tc.validation)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %s, want %d containing %q", code, body, tc.code, tc.body)
			}
			if code >= 400 && !strings.Contains(body, `"kind":"Status"`) {
				t.Fatalf("error is no Status: %s", body)
			}
			w := strings.Join(h.Values("Warning"), "\n")
			if code < 400 && ((tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning)) {
				t.Fatalf("warnings %q, want %q", w, tc.warning)
			}
		})
	}
	// Nothing of the refused patches was stored.
	p, err := ts.client.CoreV1().Pods("default").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels["a"] != "" || p.Labels["b"] != "2" || p.Spec.Containers[0].Image != "busybox:stable" {
		t.Fatalf("pod after bad patches: labels %v, containers %v", p.Labels, p.Spec.Containers)
	}
}
