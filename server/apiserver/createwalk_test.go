package apiserver

import (
	"errors"
	"math/rand"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/randfill"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// walkAndCompare returns createWalk's field set of obj and the typed
// comparison's (nil when the walk declined).
func walkAndCompare(t *testing.T, s *Server, k *kind, obj runtime.Object) (walked, compared *fieldpath.Set) {
	t.Helper()
	empty, err := s.created.emptyOf(k)
	if err != nil {
		t.Fatal(err)
	}
	obj.GetObjectKind().SetGroupVersionKind(k.gvk)
	v, err := value.NewValueReflect(obj)
	if err != nil {
		t.Fatal(err)
	}
	cw := createWalk{schema: empty.Schema(), alloc: value.HeapAllocator}
	walked, werr := cw.fields(empty.TypeRef(), empty.AsValue(), v)
	if werr != nil && !errors.Is(werr, errCreateWalk) {
		t.Fatalf("%s: walk: %v", k.gvk.Kind, werr)
	}
	cmp, err := empty.Compare(typed.AsTypedUnvalidated(v, empty.Schema(), empty.TypeRef()))
	if err != nil {
		if werr == nil {
			t.Fatalf("%s: the comparison fails (%v) where the walk does not", k.gvk.Kind, err)
		}
		return nil, nil
	}
	return walked, cmp.Modified.Union(cmp.Added).Difference(cmp.Removed)
}

func checkWalk(t *testing.T, s *Server, k *kind, obj runtime.Object) bool {
	t.Helper()
	walked, compared := walkAndCompare(t, s, k, obj)
	if compared == nil || walked == nil {
		return false
	}
	wj, err := walked.ToJSON()
	if err != nil {
		t.Fatal(err)
	}
	cj, err := compared.ToJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(wj) != string(cj) || !walked.Equals(compared) {
		t.Fatalf("%s: walk\n%s\ncomparison\n%s", k.gvk.Kind, wj, cj)
	}
	return true
}

// TestCreateWalkTakesPods checks that the walk, not the fallback, computes
// the fields of ordinary pods, and that it equals the comparison.
func TestCreateWalkTakesPods(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	k := s.reg.kindFor(corev1.SchemeGroupVersion.WithResource("pods").GroupResource())
	if k == nil {
		t.Fatal("no pod kind")
	}
	pods := []*corev1.Pod{
		benchPod(1),
		{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "A"}, {Name: "A"}}, Ports: []corev1.ContainerPort{{ContainerPort: 80}}},
				{Name: "d", Image: "i", Args: []string{}}}}},
	}
	for _, p := range pods {
		m, _ := meta.Accessor(p)
		s.prepareCreate(k, p, m)
		if !checkWalk(t, s, k, p) {
			t.Fatalf("the walk declined pod %s", p.Name)
		}
	}
}

// TestCreateWalkRandomObjects compares the walk with the typed comparison
// on randomly filled objects of every kind.
func TestCreateWalkRandomObjects(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randomFiller(seed, 0.3,
		func(mf *[]metav1.ManagedFieldsEntry, c randfill.Continue) { *mf = nil },
		func(m *metav1.TypeMeta, c randfill.Continue) {},
		// Short strings from a small alphabet: list keys repeat.
		func(str *string, c randfill.Continue) { *str = string(rune('a' + c.Intn(3))) },
	)
	rnd := rand.New(rand.NewSource(seed))
	walked, total := 0, 0
	for _, k := range s.reg.kinds {
		for i := 0; i < 60; i++ {
			obj := k.newObj()
			if i%3 != 0 {
				f.Fill(obj)
			}
			if rnd.Intn(2) == 0 {
				m, _ := meta.Accessor(obj)
				s.prepareCreate(k, obj, m)
			}
			total++
			if checkWalk(t, s, k, obj) {
				walked++
			}
		}
	}
	t.Logf("walk took %d of %d objects", walked, total)
	if walked < total/2 {
		t.Fatalf("the walk took only %d of %d objects", walked, total)
	}
}

// BenchmarkCreateFields measures the managed fields of a pod create: the
// walk (as the server runs it) and the typed comparison it replaces.
func BenchmarkCreateFields(b *testing.B) {
	ts := newTestServer(b)
	s := ts.srv
	k := s.reg.kindFor(corev1.SchemeGroupVersion.WithResource("pods").GroupResource())
	pod := benchPod(1)
	m, _ := meta.Accessor(pod)
	s.prepareCreate(k, pod, m)
	pod.SetGroupVersionKind(k.gvk)
	empty, err := s.created.emptyOf(k)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("set", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			p := pod.DeepCopy()
			if ok, err := s.created.set(k, p, p, "m", now()); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("walk", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			v, _ := value.NewValueReflect(pod)
			cw := createWalk{schema: empty.Schema(), alloc: value.HeapAllocator}
			if _, err := cw.fields(empty.TypeRef(), empty.AsValue(), v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("compare", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			v, _ := value.NewValueReflect(pod)
			cmp, err := empty.Compare(typed.AsTypedUnvalidated(v, empty.Schema(), empty.TypeRef()))
			if err != nil {
				b.Fatal(err)
			}
			_ = cmp.Modified.Union(cmp.Added).Difference(cmp.Removed)
		}
	})
}
