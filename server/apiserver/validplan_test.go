package apiserver

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/applyconfigurations"
	"sigs.k8s.io/randfill"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// TestValidityPlanImpliesValid checks, on random objects of every kind,
// that an object the plan passes is one validation accepts, and that
// ordinary pods take the plan.
func TestValidityPlanImpliesValid(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	base := applyconfigurations.NewTypeConverter(s.scheme)
	pc := newPlanTypeConverter(base)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	f := randomFiller(seed, 0.3,
		func(fv *metav1.FieldsV1, c randfill.Continue) { fv.Raw = []byte(`{"f:a":{}}`) },
		func(m *metav1.TypeMeta, c randfill.Continue) {},
		// Empty strings are frequent: keys go missing.
		func(str *string, c randfill.Continue) { *str = []string{"", "a", "b"}[c.Intn(3)] },
	)
	planned, valid, total := 0, 0, 0
	for _, k := range s.reg.kinds {
		for i := 0; i < 80; i++ {
			obj := k.newObj()
			if i > 0 {
				f.Fill(obj)
			}
			obj.GetObjectKind().SetGroupVersionKind(k.gvk)
			total++
			_, verr := base.ObjectToTyped(obj, typed.AllowDuplicates)
			if verr == nil {
				valid++
			}
			p := pc.planOf(obj)
			if p.check == nil || !p.check(reflect.ValueOf(obj)) {
				continue
			}
			planned++
			if verr != nil {
				t.Fatalf("%s: the plan passes an object validation rejects (%v): %#v", k.gvk.Kind, verr, obj)
			}
			tv, err := pc.ObjectToTyped(obj, typed.AllowDuplicates)
			if err != nil || tv == nil {
				t.Fatalf("%s: %v", k.gvk.Kind, err)
			}
		}
	}
	t.Logf("%d objects, %d valid, %d passed by the plan", total, valid, planned)
	if planned < valid/4 {
		t.Fatalf("the plan passes only %d of %d valid objects", planned, valid)
	}
	kp := s.reg.kindFor(corev1.SchemeGroupVersion.WithResource("pods").GroupResource())
	for _, pod := range []*corev1.Pod{benchPod(1), {Spec: corev1.PodSpec{ImagePullSecrets: []corev1.LocalObjectReference{{Name: "x"}}}}} {
		m := pod.DeepCopy()
		s.prepareCreate(kp, m, m)
		o := s.trackCreate(kp, m, m, "mgr")
		o.GetObjectKind().SetGroupVersionKind(kp.gvk)
		if p := pc.planOf(o); p.check == nil || !p.check(reflect.ValueOf(o)) {
			t.Fatalf("the plan does not take pod %+v", o)
		}
	}
	// A service account secret without a name (the key of secrets, which
	// may be omitted) is invalid.
	bad := &corev1.ServiceAccount{Secrets: []corev1.ObjectReference{{Kind: "Secret"}}}
	bad.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	if _, err := base.ObjectToTyped(bad, typed.AllowDuplicates); err == nil {
		t.Fatal("a service account secret without a name validates")
	}
	if p := pc.planOf(bad); p.check == nil || p.check(reflect.ValueOf(bad)) {
		t.Fatal("no plan, or the plan passes a service account secret without a name")
	}
	bad.Secrets[0].Name = "s"
	if p := pc.planOf(bad); !p.check(reflect.ValueOf(bad)) {
		t.Fatal("the plan does not pass a named service account secret")
	}
}

// TestScalarValidMatchesValidation compares scalarValid with the
// validating walk for null and scalar values against every kind of atom.
func TestScalarValidMatchesValidation(t *testing.T) {
	str, num, boo, unt := smdschema.String, smdschema.Numeric, smdschema.Boolean, smdschema.Untyped
	atoms := map[string]smdschema.Atom{
		"string":  {Scalar: &str},
		"numeric": {Scalar: &num},
		"boolean": {Scalar: &boo},
		"untyped": {Scalar: &unt},
		"map":     {Map: &smdschema.Map{ElementType: smdschema.TypeRef{Inlined: smdschema.Atom{Scalar: &str}}}},
		"list":    {List: &smdschema.List{ElementType: smdschema.TypeRef{Inlined: smdschema.Atom{Scalar: &str}}, ElementRelationship: smdschema.Atomic}},
		"any": {Scalar: &unt, Map: &smdschema.Map{ElementType: smdschema.TypeRef{Inlined: smdschema.Atom{Scalar: &unt}}},
			List: &smdschema.List{ElementType: smdschema.TypeRef{Inlined: smdschema.Atom{Scalar: &unt}}, ElementRelationship: smdschema.Atomic}},
	}
	var s smdschema.Schema
	for name, a := range atoms {
		s.Types = append(s.Types, smdschema.TypeDef{Name: name, Atom: a})
	}
	for name, a := range atoms {
		n := name
		for _, u := range []interface{}{nil, "s", true, int64(1), 1.5} {
			ok, known := scalarValid(a, u)
			if !known {
				t.Fatalf("%s %#v: not known", name, u)
			}
			_, err := typed.AsTyped(value.NewValueInterface(u), &s, smdschema.TypeRef{NamedType: &n}, typed.AllowDuplicates)
			if ok != (err == nil) {
				t.Fatalf("%s %#v: scalarValid %v, validation %v", name, u, ok, err)
			}
		}
		if _, known := scalarValid(a, map[string]interface{}{}); known {
			t.Fatalf("%s: a map is known", name)
		}
	}
}
