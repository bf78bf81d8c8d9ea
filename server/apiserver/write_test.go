package apiserver

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/randfill"
)

// TestSemanticEqualMatchesDeepEqual compares semanticEqual with
// apiequality.Semantic.DeepEqual on random objects of every kind and on
// copies of them with one part refilled, emptied or nil-versus-empty.
func TestSemanticEqualMatchesDeepEqual(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randfill.NewWithSeed(seed).NilChance(0.3).NumElements(0, 2).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewMilliQuantity(c.Int63n(3), resource.DecimalSI)
		},
		func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(3), 0) },
		func(tm *metav1.MicroTime, c randfill.Continue) { *tm = metav1.NewMicroTime(time.Unix(c.Int63n(3), 0)) },
		func(str *string, c randfill.Continue) { *str = []string{"a", "b"}[c.Intn(2)] },
		func(fv *metav1.FieldsV1, c randfill.Continue) { fv.Raw = []byte(`{}`) },
		func(r *runtime.RawExtension, c randfill.Continue) { r.Raw = []byte(`{}`) },
	)
	equal, differ := 0, 0
	for _, k := range s.reg.kinds {
		for i := 0; i < 40; i++ {
			a := k.newObj()
			f.Fill(a)
			b := a.DeepCopyObject()
			switch i % 4 {
			case 1:
				b = k.newObj()
				f.Fill(b)
			case 2:
				copyField(b, k.newObj(), []string{"Status", "ObjectMeta", "Spec", "TypeMeta"}[i%8/2])
			case 3:
				if p, ok := b.(*corev1.Pod); ok {
					if p.Spec.Containers == nil {
						p.Spec.Containers = []corev1.Container{}
					} else if len(p.Spec.Containers) == 0 {
						p.Spec.Containers = nil
					}
					p.Labels = map[string]string{}
				}
			}
			want := apiequality.Semantic.DeepEqual(a, b)
			if got := semanticEqual(a, b); got != want {
				t.Fatalf("%s: semanticEqual %v, DeepEqual %v\n%#v\n%#v", k.gvk.Kind, got, want, a, b)
			}
			if want {
				equal++
			} else {
				differ++
			}
		}
	}
	t.Logf("%d equal, %d different pairs", equal, differ)
	if equal == 0 || differ == 0 {
		t.Fatalf("pairs not varied: %d equal, %d different", equal, differ)
	}
}

// BenchmarkSemanticEqual compares a pod with its status patched (the
// scheduler's write) by semanticEqual and by Semantic.DeepEqual.
func BenchmarkSemanticEqual(b *testing.B) {
	ts := newTestServer(b)
	s := ts.srv
	k := s.reg.kindFor(corev1.SchemeGroupVersion.WithResource("pods").GroupResource())
	pod := benchPod(1)
	pod.Namespace = "default"
	s.prepareCreate(k, pod, pod)
	old := s.trackCreate(k, pod, pod, "m").(*corev1.Pod)
	old.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "a"}}
	obj := old.DeepCopy()
	obj.Spec = old.Spec
	obj.Status.Conditions[0].Message = "b"
	for name, eq := range map[string]func(a, b runtime.Object) bool{
		"ordered":  semanticEqual,
		"semantic": func(a, b runtime.Object) bool { return apiequality.Semantic.DeepEqual(a, b) },
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if eq(obj, old) {
					b.Fatal("equal")
				}
			}
		})
	}
}
