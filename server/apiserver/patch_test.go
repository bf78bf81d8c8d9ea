package apiserver

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/randfill"
)

// strategicPatches are patches of every shape the strategic merge knows.
var strategicPatches = []string{
	`{"metadata":{"uid":"u"},"status":{"conditions":[{"type":"PodScheduled","status":"False","lastProbeTime":null,"lastTransitionTime":"2026-01-01T00:00:00Z","reason":"Unschedulable","message":"m"}]}}`,
	`{"metadata":{"labels":{"a":"b","c":null},"annotations":null}}`,
	`{"spec":{"containers":[{"name":"c","image":"x"},{"name":"n","image":"y"}]}}`,
	`{"spec":{"containers":[{"name":"c","$patch":"delete"}],"$setElementOrder/containers":[{"name":"c"}]}}`,
	`{"spec":{"ports":[{"port":80,"protocol":"TCP","targetPort":8080}]}}`,
	`{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"c","env":[{"name":"A","value":"1"}]}]}}}}`,
	`{"data":{"k":"v"},"stringData":{"x":"y"},"binaryData":{"b":"AAE="}}`,
	`{"status":{"$retainKeys":["phase"],"phase":"Running"}}`,
	`{"spec":{"finalizers":["a"]},"metadata":{"finalizers":["x","y"],"$deleteFromPrimitiveList/finalizers":["f"]}}`,
	`{"spec":{"nodeSelector":{"$patch":"replace","n":"2"}}}`,
	`null`,
	`[]`,
	`{"spec":`,
	``,
	`{"spec":{"containers":[{"image":"no name"}]}}`,
	`{"spec":{"containers":{"name":"not a list"}}}`,
}

// TestStrategicMergeMatchesUpstream checks that the patch path's strategic
// merge from the object's JSON map gives what StrategicMergePatch gives
// from its JSON text, bytes and errors, on random objects of every kind.
func TestStrategicMergeMatchesUpstream(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randfill.NewWithSeed(seed).NilChance(0.3).NumElements(0, 3).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewMilliQuantity(c.Int63n(100000), resource.DecimalSI)
		},
		func(tm *metav1.Time, c randfill.Continue) { *tm = metav1.Unix(c.Int63n(2e9), 0) },
		func(tm *metav1.MicroTime, c randfill.Continue) {
			*tm = metav1.NewMicroTime(time.Unix(c.Int63n(2e9), c.Int63n(1e9)))
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*v = intstr.FromInt32(c.Int31n(1000))
			} else {
				*v = intstr.FromString(c.String(5))
			}
		},
		func(r *runtime.RawExtension, c randfill.Continue) { *r = runtime.RawExtension{Raw: []byte(`{"a":1}`)} },
		func(m *metav1.TypeMeta, c randfill.Continue) {},
		func(fv *metav1.FieldsV1, c randfill.Continue) {
			fv.Raw = []byte(`{"f:metadata":{"f:labels":{".":{}}}}`)
		},
		func(str *string, c randfill.Continue) {
			*str = []string{"a", "c", "n", "x", "TCP", "", "\xff\u2028<&>"}[c.Intn(7)]
		},
	)
	n := 0
	var all []*served
	for _, gv := range s.reg.order {
		for _, sv := range s.reg.served[gv] {
			all = append(all, sv)
		}
	}
	for _, sv := range all {
		for i := 0; i < 8; i++ {
			obj := sv.newObj()
			if i > 0 {
				f.Fill(obj)
			}
			if i == 1 {
				if p, ok := obj.(*corev1.Pod); ok {
					p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c", Image: "i"})
				}
			}
			cur, err := s.jsonOf(sv, obj.DeepCopyObject())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range strategicPatches {
				want, werr := strategicpatch.StrategicMergePatch(cur, []byte(p), sv.newObj())
				m, err := s.unstructuredOf(sv, obj.DeepCopyObject())
				if err != nil {
					t.Fatal(err)
				}
				got, gerr := strategicMerge(m, []byte(p), sv.newObj())
				// Bytes differ only where a stored string is not UTF-8 (the
				// text path has replaced it once already, the map path
				// escapes the replacement): the decoded documents agree.
				if fmt.Sprint(werr) != fmt.Sprint(gerr) || !sameJSON(t, want, got) {
					t.Fatalf("%s %s, patch %s:\n got %s %v\nwant %s %v\nobject %s", sv.gv, sv.k.gvk.Kind, p, got, gerr, want, werr, cur)
				}
				n++
			}
		}
	}
	t.Logf("%d patches compared", n)
}

// sameJSON says whether a and b are the same bytes or decode to the same
// document.
func sameJSON(t *testing.T, a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y interface{}
	if err := utiljson.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := utiljson.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
