package apiserver

import (
	"errors"
	"reflect"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// planTypeConverter is a managedfields.TypeConverter that skips the schema
// validation of a typed object (a walk of the whole object, twice per
// update in the field manager) where the object's Go type shows it cannot
// fail. Validating a Go object against the schema generated from its type
// can fail only where the type leaves room: a keyed list item that omits
// all its keys, a nil item, a field the schema does not declare, a value
// that converts itself (times, quantities). For each kind a plan, built
// once from the Go type and the schema, lists those places; an object is
// taken unvalidated when the plan's checks pass, and validated as before
// otherwise (or when the plan cannot tell, or the options are not the
// field manager's).
type planTypeConverter struct {
	managedfields.TypeConverter

	mu    sync.Mutex
	plans map[planOf]*kindPlan
}

// planOf identifies a plan: a kind and its Go type.
type planOf struct {
	gvk schema.GroupVersionKind
	t   reflect.Type
}

// kindPlan is the validity plan of one kind.
type kindPlan struct {
	schema  *smdschema.Schema
	typeRef smdschema.TypeRef
	// check says the object cannot fail validation; nil: no plan (always
	// validate).
	check checkFn
}

// checkFn says whether a value certainly validates; false means
// "validate to find out", not "invalid".
type checkFn func(rv reflect.Value) bool

func newPlanTypeConverter(tc managedfields.TypeConverter) *planTypeConverter {
	return &planTypeConverter{TypeConverter: tc, plans: map[planOf]*kindPlan{}}
}

// ObjectToTyped converts obj like the wrapped converter does.
func (c *planTypeConverter) ObjectToTyped(obj runtime.Object, opts ...typed.ValidationOptions) (*typed.TypedValue, error) {
	if _, ok := obj.(*unstructured.Unstructured); ok || len(opts) != 1 || opts[0] != typed.AllowDuplicates {
		return c.TypeConverter.ObjectToTyped(obj, opts...)
	}
	p := c.planOf(obj)
	if p == nil || p.check == nil || !p.check(reflect.ValueOf(obj)) {
		return c.TypeConverter.ObjectToTyped(obj, opts...)
	}
	v, err := value.NewValueReflect(obj)
	if err != nil {
		return c.TypeConverter.ObjectToTyped(obj, opts...)
	}
	return typed.AsTypedUnvalidated(v, p.schema, p.typeRef), nil
}

// planOf returns the plan of obj's kind, building it on first use.
func (c *planTypeConverter) planOf(obj runtime.Object) *kindPlan {
	gvk := obj.GetObjectKind().GroupVersionKind()
	key := planOf{gvk: gvk, t: reflect.TypeOf(obj)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.plans[key]; ok {
		return p
	}
	p := &kindPlan{}
	c.plans[key] = p
	// The schema and type of the kind, from an empty object of it.
	if key.t.Kind() != reflect.Pointer || key.t.Elem().Kind() != reflect.Struct {
		return p
	}
	empty, ok := reflect.New(key.t.Elem()).Interface().(runtime.Object)
	if !ok {
		return p
	}
	empty.GetObjectKind().SetGroupVersionKind(gvk)
	tv, err := c.TypeConverter.ObjectToTyped(empty, typed.AllowDuplicates)
	if err != nil {
		return p
	}
	b := planBuilder{schema: tv.Schema(), building: map[planKey]bool{}}
	check, err := b.build(reflect.TypeOf(obj), tv.TypeRef())
	if err != nil {
		return p
	}
	p.schema, p.typeRef, p.check = tv.Schema(), tv.TypeRef(), check
	if p.check == nil {
		p.check = func(reflect.Value) bool { return true }
	}
	return p
}

// errNoPlan: the Go type leaves validity to a full validation.
var errNoPlan = errors.New("no validity plan")

type planKey struct {
	t  reflect.Type
	tr string
}

type planBuilder struct {
	schema   *smdschema.Schema
	building map[planKey]bool
}

// build returns the checks a value of Go type t needs to validate as schema
// type tr, following the validating walk of structured-merge-diff over the
// reflected value: nil when it always validates, errNoPlan when the type
// leaves room the plan does not cover.
func (b *planBuilder) build(t reflect.Type, tr smdschema.TypeRef) (checkFn, error) {
	if tr.NamedType != nil {
		key := planKey{t: t, tr: *tr.NamedType}
		if b.building[key] {
			// A recursive type: not planned.
			return nil, errNoPlan
		}
		b.building[key] = true
		defer delete(b.building, key)
	}

	a, ok := b.schema.Resolve(tr)
	if !ok {
		return nil, errNoPlan
	}
	entry := value.TypeReflectEntryOf(t)
	if entry.CanConvertToUnstructured() {
		// What it converts to is known only at run time: validate the
		// converted value (a time, a quantity: small).
		s := b.schema
		return func(rv reflect.Value) bool {
			u, err := entry.ToUnstructured(rv)
			if err != nil {
				return false
			}
			if ok, known := scalarValid(a, u); known {
				return ok
			}
			_, err = typed.AsTyped(value.NewValueInterface(u), s, tr, typed.AllowDuplicates)
			return err == nil
		}, nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		et := t.Elem()
		if et.Kind() == reflect.Pointer || et.Kind() == reflect.Interface {
			return nil, errNoPlan
		}
		if a.Map == nil && a.Scalar == nil && a.List == nil {
			return nil, errNoPlan
		}
		// A nil pointer is null, valid for any type; the value walk
		// dereferences once and does not convert the element again.
		inner, err := b.buildDeref(et, a, tr)
		if err != nil || inner == nil {
			return nil, err
		}
		return func(rv reflect.Value) bool {
			if rv.IsNil() {
				return true
			}
			return inner(rv.Elem())
		}, nil
	default:
		return b.buildDeref(t, a, tr)
	}
}

// buildDeref plans a dereferenced value of Go type t and schema atom a.
func (b *planBuilder) buildDeref(t reflect.Type, a smdschema.Atom, tr smdschema.TypeRef) (checkFn, error) {
	switch t.Kind() {
	case reflect.String:
		if a.Scalar == nil || (*a.Scalar != smdschema.String && *a.Scalar != smdschema.Untyped) {
			return nil, errNoPlan
		}
		return nil, nil
	case reflect.Bool:
		if a.Scalar == nil || (*a.Scalar != smdschema.Boolean && *a.Scalar != smdschema.Untyped) {
			return nil, errNoPlan
		}
		return nil, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Float32, reflect.Float64:
		if a.Scalar == nil || (*a.Scalar != smdschema.Numeric && *a.Scalar != smdschema.Untyped) {
			return nil, errNoPlan
		}
		return nil, nil
	case reflect.Struct:
		if a.Map == nil {
			return nil, errNoPlan
		}
		return b.buildStruct(t, a.Map)
	case reflect.Map:
		if a.Map == nil || t.Key().Kind() != reflect.String || len(a.Map.Fields) > 0 || (a.Map.ElementType == smdschema.TypeRef{}) {
			return nil, errNoPlan
		}
		elem, err := b.build(t.Elem(), a.Map.ElementType)
		if err != nil || elem == nil {
			return nil, err
		}
		return func(rv reflect.Value) bool {
			it := rv.MapRange()
			for it.Next() {
				if !elem(it.Value()) {
					return false
				}
			}
			return true
		}, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			// []byte is a string (null when nil).
			if a.Scalar == nil || (*a.Scalar != smdschema.String && *a.Scalar != smdschema.Untyped) {
				return nil, errNoPlan
			}
			return nil, nil
		}
		if a.List == nil {
			return nil, errNoPlan
		}
		return b.buildList(t, a.List)
	}
	return nil, errNoPlan
}

func (b *planBuilder) buildStruct(t reflect.Type, m *smdschema.Map) (checkFn, error) {
	type fieldCheck struct {
		f     *value.FieldCacheEntry
		check checkFn
	}
	var checks []fieldCheck
	for name, f := range value.TypeReflectEntryOf(t).Fields() {
		ft := m.ElementType
		if sf, ok := m.FindField(name); ok {
			ft = sf.Type
		} else if (ft == smdschema.TypeRef{}) {
			return nil, errNoPlan
		}
		c, err := b.build(fieldType(t, f), ft)
		if err != nil {
			return nil, err
		}
		if c != nil {
			checks = append(checks, fieldCheck{f: f, check: c})
		}
	}
	if len(checks) == 0 {
		return nil, nil
	}
	return func(rv reflect.Value) bool {
		for _, fc := range checks {
			fv := fc.f.GetFrom(rv)
			if fc.f.CanOmit(fv) {
				continue
			}
			if !fc.check(fv) {
				return false
			}
		}
		return true
	}, nil
}

// fieldType is the Go type of the struct field f of t (f may be inlined
// from an embedded struct).
func fieldType(t reflect.Type, f *value.FieldCacheEntry) reflect.Type {
	return f.GetFrom(reflect.New(t).Elem()).Type()
}

func (b *planBuilder) buildList(t reflect.Type, l *smdschema.List) (checkFn, error) {
	et := t.Elem()
	elem, err := b.build(et, l.ElementType)
	if err != nil {
		return nil, err
	}
	var item checkFn
	if l.ElementRelationship == smdschema.Associative {
		if value.TypeReflectEntryOf(et).CanConvertToUnstructured() {
			return nil, errNoPlan
		}
		if len(l.Keys) == 0 {
			// A set: its items must be non-null scalars.
			switch et.Kind() {
			case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Float32, reflect.Float64:
			default:
				return nil, errNoPlan
			}
		} else {
			item, err = b.keysCheck(et, l)
			if err != nil {
				return nil, err
			}
		}
	}
	if elem == nil && item == nil {
		return nil, nil
	}
	return func(rv reflect.Value) bool {
		for i, n := 0, rv.Len(); i < n; i++ {
			iv := rv.Index(i)
			if item != nil && !item(iv) {
				return false
			}
			if elem != nil && !elem(iv) {
				return false
			}
		}
		return true
	}, nil
}

// keysCheck plans the keys of a keyed list's items (of Go type et): an item
// must be a non-null struct with at least one key present or defaulted.
func (b *planBuilder) keysCheck(et reflect.Type, l *smdschema.List) (checkFn, error) {
	ptr := false
	st := et
	if st.Kind() == reflect.Pointer {
		ptr, st = true, st.Elem()
	}
	if st.Kind() != reflect.Struct {
		return nil, errNoPlan
	}
	ea, ok := b.schema.Resolve(l.ElementType)
	if !ok || ea.Map == nil {
		return nil, errNoPlan
	}
	fields := value.TypeReflectEntryOf(st).Fields()
	var optional []*value.FieldCacheEntry
	always := false
	for _, k := range l.Keys {
		if sf, _ := ea.Map.FindField(k); sf.Default != nil {
			always = true
			continue
		}
		f, ok := fields[k]
		if !ok {
			continue
		}
		if !canBeOmitted(st, f) {
			always = true
			continue
		}
		optional = append(optional, f)
	}
	if always && !ptr {
		return nil, nil
	}
	return func(iv reflect.Value) bool {
		if ptr {
			if iv.IsNil() {
				return false
			}
			iv = iv.Elem()
		}
		if always {
			return true
		}
		for _, f := range optional {
			if !f.CanOmit(f.GetFrom(iv)) {
				return true
			}
		}
		return false
	}, nil
}

// canBeOmitted says whether field f of struct type st can be left out of
// the value (omitempty or omitzero), probing with the zero value: a field
// that the zero value does not omit is never omitted.
func canBeOmitted(st reflect.Type, f *value.FieldCacheEntry) bool {
	return f.CanOmit(f.GetFrom(reflect.New(st).Elem()))
}

// scalarValid decides, as the validating walk would, whether a converted
// value that is null or a scalar validates as atom a; known is false for
// other values (maps, lists), which are validated in full.
func scalarValid(a smdschema.Atom, u interface{}) (ok, known bool) {
	accepts := func(types ...smdschema.Scalar) bool {
		if a.Scalar == nil {
			// Deduction falls back to the whole atom, whose map or list
			// rejects a scalar.
			return false
		}
		for _, t := range types {
			if *a.Scalar == t {
				return true
			}
		}
		return false
	}
	switch u.(type) {
	case nil:
		return a.Map != nil || a.Scalar != nil || a.List != nil, true
	case string:
		return accepts(smdschema.String, smdschema.Untyped), true
	case bool:
		return accepts(smdschema.Boolean, smdschema.Untyped), true
	case int64, float64:
		return accepts(smdschema.Numeric, smdschema.Untyped), true
	}
	return false, false
}
