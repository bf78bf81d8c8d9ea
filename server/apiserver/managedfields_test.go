package apiserver

import (
	"bytes"
	"math/rand"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"
)

// checkCreateFields compares the fast create path with the field manager's
// update pipeline on a copy of obj.
func checkCreateFields(t *testing.T, s *Server, k *kind, obj runtime.Object) {
	t.Helper()
	fm, err := s.fieldManager(k, "")
	if err != nil {
		t.Fatal(err)
	}
	a, b := obj.DeepCopyObject(), obj.DeepCopyObject()
	a.GetObjectKind().SetGroupVersionKind(k.gvk)
	b.GetObjectKind().SetGroupVersionKind(k.gvk)
	want := fm.UpdateNoErrors(k.newObj(), a, "mgr")
	mb, _ := meta.Accessor(b)
	ok, err := s.created.set(k, b, mb, "mgr", now())
	if err != nil || !ok {
		// The fast path gives up only where the pipeline has to be used.
		got := s.trackCreate(k, b, mb, "mgr")
		b = got
		mb, _ = meta.Accessor(b)
	}
	mw, _ := meta.Accessor(want)
	wf, gf := mw.GetManagedFields(), mb.GetManagedFields()
	if len(wf) != len(gf) {
		t.Fatalf("%s: %d managed fields entries, want %d:\ngot  %+v\nwant %+v", k.gvk.Kind, len(gf), len(wf), gf, wf)
	}
	for i := range wf {
		w, g := wf[i], gf[i]
		if w.Manager != g.Manager || w.Operation != g.Operation || w.APIVersion != g.APIVersion ||
			w.FieldsType != g.FieldsType || w.Subresource != g.Subresource || (w.Time == nil) != (g.Time == nil) {
			t.Fatalf("%s: entry %+v, want %+v", k.gvk.Kind, g, w)
		}
		if !bytes.Equal(w.FieldsV1.Raw, g.FieldsV1.Raw) {
			t.Fatalf("%s: fields\n got %s\nwant %s", k.gvk.Kind, g.FieldsV1.Raw, w.FieldsV1.Raw)
		}
	}
	mw.SetManagedFields(nil)
	mb.SetManagedFields(nil)
	if !apiequality.Semantic.DeepEqual(want, b) {
		t.Fatalf("%s: the fast path changed the object", k.gvk.Kind)
	}
}

func TestCreateFieldsMatchFieldManager(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", Labels: map[string]string{"app": "x"},
			Annotations:     map[string]string{"a": "b"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "u1"}},
			Finalizers:      []string{"f"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox:stable", Command: []string{"sleep", "3600"},
				Env:          []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
				Ports:        []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
				Resources:    corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
				VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}}},
			InitContainers: []corev1.Container{{Name: "i", Image: "busybox"}},
			Volumes:        []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Tolerations:    []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}},
			NodeSelector:   map[string]string{"n": "1"},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "d"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}},
			Strategy: appsv1.DeploymentStrategy{RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptrTo(intstr.FromString("25%"))}},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "d"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	objs := map[string][]runtime.Object{
		"Pod":        {pod, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "min", Namespace: "default"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}},
		"Deployment": {dep},
		"Service":    {svc},
		"ConfigMap": {
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "default"}, Data: map[string]string{"a": "1"}},
			// Nothing tracked: no entry at all.
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: "default"}},
			// A reset request (one empty entry) starts from nothing.
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "reset", Namespace: "default", ManagedFields: []metav1.ManagedFieldsEntry{{}}}, Data: map[string]string{"a": "1"}},
			// Managed fields sent by the client go through the pipeline.
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "sent", Namespace: "default", ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "other", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:data":{"f:b":{}}}`)}}}}, Data: map[string]string{"a": "1", "b": "2"}},
		},
	}
	for _, k := range s.reg.kinds {
		for _, obj := range objs[k.gvk.Kind] {
			o := obj.DeepCopyObject()
			m, _ := meta.Accessor(o)
			s.prepareCreate(k, o, m)
			checkCreateFields(t, s, k, o)
		}
	}
}

// TestCreateFieldsRandomObjects compares the fast path with the field
// manager on randomly filled objects of every kind the server stores.
func TestCreateFieldsRandomObjects(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randomFiller(seed, 0.4,
		func(mf *[]metav1.ManagedFieldsEntry, c randfill.Continue) { *mf = nil },
		func(m *metav1.TypeMeta, c randfill.Continue) {},
	)
	rnd := rand.New(rand.NewSource(seed))
	for _, k := range s.reg.kinds {
		for i := 0; i < 50; i++ {
			obj := k.newObj()
			f.Fill(obj)
			if rnd.Intn(2) == 0 {
				m, _ := meta.Accessor(obj)
				s.prepareCreate(k, obj, m)
			}
			checkCreateFields(t, s, k, obj)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

// randomFiller fills objects of every kind with random values that the
// API types accept where randfill's own would not (quantities, times,
// int-or-strings, raw extensions holding JSON), then the extra fill
// functions given.
func randomFiller(seed int64, nilChance float64, extra ...any) *randfill.Filler {
	funcs := []any{
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewMilliQuantity(c.Int63n(100000), resource.DecimalSI)
		},
		func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(2e9), 0) },
		func(tm *metav1.MicroTime, c randfill.Continue) {
			*tm = metav1.NewMicroTime(time.Unix(c.Int63n(2e9), 0))
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*v = intstr.FromInt32(c.Int31n(1000))
			} else {
				*v = intstr.FromString(c.String(5))
			}
		},
		func(r *runtime.RawExtension, c randfill.Continue) { *r = runtime.RawExtension{Raw: []byte(`{"a":1}`)} },
	}
	return randfill.NewWithSeed(seed).NilChance(nilChance).NumElements(0, 3).Funcs(append(funcs, extra...)...)
}
