package apiserver

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/applyconfigurations"
	"sigs.k8s.io/randfill"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// TestSSASchemaCoversServedKinds: every kind the server serves converts to a
// typed value with orch's trimmed schema exactly as with client-go's schema
// of all built-in types (which orch no longer links), on a filled object:
// the same value and the same field set (list keys are part of its paths).
func TestSSASchemaCoversServedKinds(t *testing.T) {
	s := newTestServer(t).srv
	full := applyconfigurations.NewTypeConverter(s.scheme)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randomFiller(seed, 0.3,
		func(mf *[]metav1.ManagedFieldsEntry, c randfill.Continue) { *mf = nil },
		func(m *metav1.TypeMeta, c randfill.Continue) {},
	)
	n := 0
	for gvk := range s.scheme.AllKnownTypes() {
		if gvk.Group == "meta.k8s.io" || gvk.Version == runtime.APIVersionInternal || strings.HasSuffix(gvk.Kind, "List") ||
			strings.HasSuffix(gvk.Kind, "Options") || gvk.Kind == "WatchEvent" || gvk.Kind == "Status" || gvk.Kind == "APIGroup" {
			continue
		}
		obj, err := s.scheme.New(gvk)
		if err != nil {
			t.Fatal(err)
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
		if _, err := full.ObjectToTyped(obj); err != nil {
			continue // not a kind client-go's schema knows either (request types)
		}
		filled := obj.DeepCopyObject()
		f.Fill(filled)
		filled.GetObjectKind().SetGroupVersionKind(gvk)
		want, werr := full.ObjectToTyped(filled)
		got, err := s.typeConv.ObjectToTyped(filled)
		if werr != nil {
			// Random lists can repeat a key: both must refuse.
			if err == nil {
				t.Fatalf("%v: orch's schema accepts what client-go's refuses: %v", gvk, werr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v with orch's schema: %v", gvk, err)
		}
		if !value.Equals(got.AsValue(), want.AsValue()) {
			t.Fatalf("%v: typed values differ", gvk)
		}
		gotSet, err1 := got.ToFieldSet()
		wantSet, err2 := want.ToFieldSet()
		if err1 != nil || err2 != nil || !gotSet.Equals(wantSet) {
			t.Fatalf("%v: field sets differ (%v, %v)", gvk, err1, err2)
		}
		n++
	}
	if n < 20 {
		t.Fatalf("only %d kinds checked", n)
	}
	t.Logf("%d kinds checked", n)
}
