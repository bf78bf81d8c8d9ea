package apiserver

import (
	"errors"
	"fmt"

	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/schema"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// errCreateWalk says the walk met a shape it does not handle (the caller
// then runs the full typed comparison).
var errCreateWalk = errors.New("managed fields walk: unsupported shape")

// createWalk computes what typed.TypedValue.Compare of the empty object of
// a kind (lhs) with a new object (rhs) reports as Modified or Added, less
// what it reports as Removed: the fields a create sets. It is that
// comparison specialised for an lhs that holds next to nothing (the empty
// object of a kind has a few structs and null or zero fields, never list
// items): it walks the new object once, descends into the empty object only
// where it has the same field, and builds the field set node by node rather
// than inserting every path from the root.
//
// It follows the comparison's rules: a node the empty object lacks is added
// (maps and lists with their children, unless atomic or empty, when they are
// leaves); a leaf both have is modified when the values differ; list items
// are named by their keys (or by their value for sets), and an item whose
// name occurs more than once is added by name without its children. Where
// the comparison would treat both sides differently (the empty object has
// list items, or the two sides resolve to different kinds of atom) the walk
// returns errCreateWalk.
type createWalk struct {
	schema *schema.Schema
	alloc  value.Allocator
}

// fields returns the fields a create of rhs sets, compared with the empty
// object lhs, both of root type tr.
func (w *createWalk) fields(tr schema.TypeRef, lhs, rhs value.Value) (*fieldpath.Set, error) {
	a, ok := w.schema.Resolve(tr)
	if !ok || a.Map == nil || lhs == nil || !lhs.IsMap() || !rhs.IsMap() {
		return nil, errCreateWalk
	}
	t := a.Map
	lm, rm := lhs.AsMapUsing(w.alloc), rhs.AsMapUsing(w.alloc)
	set := &fieldpath.Set{}
	if t.ElementRelationship == schema.Atomic || (lm.Empty() && rm.Empty()) {
		return nil, errCreateWalk
	}
	var err error
	rm.IterateUsing(w.alloc, func(key string, rv value.Value) bool {
		ft := t.ElementType
		if sf, ok := t.FindField(key); ok {
			ft = sf.Type
		}
		var lv value.Value
		if v, ok := lm.GetUsing(w.alloc, key); ok {
			lv = v
		}
		k := key
		err = w.walk(set, fieldpath.PathElement{FieldName: &k}, ft, lv, rv)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// walk records into set (the set of the parent path) what node pe of type tr
// contributes, lhs being the node in the empty object (nil when absent) and
// rhs the node in the new object (never nil).
func (w *createWalk) walk(set *fieldpath.Set, pe fieldpath.PathElement, tr schema.TypeRef, lhs, rhs value.Value) error {
	a, ok := w.schema.Resolve(tr)
	if !ok {
		return fmt.Errorf("%w: no type %v", errCreateWalk, tr.NamedType)
	}
	arhs := deduceAtomOf(a, rhs)
	if lhs != nil {
		alhs := deduceAtomOf(a, lhs)
		if !sameAtom(alhs, arhs) {
			return errCreateWalk
		}
	}
	switch {
	case arhs.Map != nil:
		return w.doMap(set, pe, arhs.Map, lhs, rhs)
	case arhs.Scalar != nil:
		if rhs.IsMap() || rhs.IsList() {
			// Not a scalar: the comparison reports a validation error.
			return errCreateWalk
		}
		w.leaf(set, pe, lhs, rhs)
		return nil
	case arhs.List != nil:
		return w.doList(set, pe, arhs.List, lhs, rhs)
	}
	return fmt.Errorf("%w: invalid atom", errCreateWalk)
}

// leaf records a leaf: added when the empty object lacks it, modified when
// it differs.
func (w *createWalk) leaf(set *fieldpath.Set, pe fieldpath.PathElement, lhs, rhs value.Value) {
	if lhs == nil || !value.EqualsUsing(w.alloc, rhs, lhs) {
		set.Members.Insert(pe)
	}
}

// child walks the children of node pe into a set of their own and attaches
// it to set when it is not empty (a set holds no empty nodes); added says
// whether the node itself is a member.
func (w *createWalk) child(set *fieldpath.Set, pe fieldpath.PathElement, added bool, fn func(*fieldpath.Set) error) error {
	var sub fieldpath.Set
	if err := fn(&sub); err != nil {
		return err
	}
	if !sub.Empty() {
		*set.Children.Descend(pe) = sub
	}
	if added {
		set.Members.Insert(pe)
	}
	return nil
}

func (w *createWalk) doMap(set *fieldpath.Set, pe fieldpath.PathElement, t *schema.Map, lhs, rhs value.Value) error {
	var lm, rm value.Map
	if lhs != nil {
		if !lhs.IsNull() {
			if !lhs.IsMap() {
				return errCreateWalk
			}
			lm = lhs.AsMapUsing(w.alloc)
		}
	}
	if !rhs.IsNull() {
		if !rhs.IsMap() {
			// The comparison treats a value of the wrong shape as a null
			// map (and reports a validation error elsewhere).
			return errCreateWalk
		}
		rm = rhs.AsMapUsing(w.alloc)
	}
	if t.ElementRelationship == schema.Atomic || ((lm == nil || lm.Empty()) && (rm == nil || rm.Empty())) {
		w.leaf(set, pe, lhs, rhs)
		return nil
	}
	if rm == nil {
		// lhs has entries, rhs is null: only removals.
		return nil
	}
	return w.child(set, pe, lhs == nil, func(sub *fieldpath.Set) error {
		var err error
		rm.IterateUsing(w.alloc, func(key string, rv value.Value) bool {
			ft := t.ElementType
			if sf, ok := t.FindField(key); ok {
				ft = sf.Type
			}
			var lv value.Value
			if lm != nil {
				if v, ok := lm.GetUsing(w.alloc, key); ok {
					lv = v
				}
			}
			k := key
			err = w.walk(sub, fieldpath.PathElement{FieldName: &k}, ft, lv, rv)
			return err == nil
		})
		return err
	})
}

func (w *createWalk) doList(set *fieldpath.Set, pe fieldpath.PathElement, t *schema.List, lhs, rhs value.Value) error {
	if lhs != nil && !lhs.IsNull() {
		if !lhs.IsList() {
			return errCreateWalk
		}
		if lhs.AsListUsing(w.alloc).Length() > 0 {
			return errCreateWalk
		}
	}
	var rl value.List
	if !rhs.IsNull() {
		if !rhs.IsList() {
			return errCreateWalk
		}
		rl = rhs.AsListUsing(w.alloc)
	}
	if t.ElementRelationship == schema.Atomic || rl == nil || rl.Length() == 0 {
		w.leaf(set, pe, lhs, rhs)
		return nil
	}
	return w.child(set, pe, lhs == nil, func(sub *fieldpath.Set) error {
		n := rl.Length()
		items := make([]value.Value, n)
		pes := make([]fieldpath.PathElement, n)
		seen := fieldpath.MakePathElementSet(n)
		var dups *fieldpath.PathElementSet
		for i := 0; i < n; i++ {
			items[i] = rl.AtUsing(w.alloc, i)
			p, err := w.itemElement(t, items[i])
			if err != nil {
				return err
			}
			pes[i] = p
			if seen.Has(p) {
				if dups == nil {
					d := fieldpath.MakePathElementSet(1)
					dups = &d
				}
				dups.Insert(p)
			} else {
				seen.Insert(p)
			}
		}
		for i := 0; i < n; i++ {
			if dups != nil && dups.Has(pes[i]) {
				// Named more than once: added by name, without children.
				sub.Members.Insert(pes[i])
				continue
			}
			if err := w.walk(sub, pes[i], t.ElementType, nil, items[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// itemElement names a list item as the comparison does: by its key fields
// (with their schema defaults) or, in a set, by its value.
func (w *createWalk) itemElement(t *schema.List, item value.Value) (fieldpath.PathElement, error) {
	if t.ElementRelationship != schema.Associative {
		return fieldpath.PathElement{}, errCreateWalk
	}
	if len(t.Keys) == 0 {
		if item.IsMap() || item.IsList() || item.IsNull() {
			return fieldpath.PathElement{}, errCreateWalk
		}
		v := item
		return fieldpath.PathElement{Value: &v}, nil
	}
	if item.IsNull() || !item.IsMap() {
		return fieldpath.PathElement{}, errCreateWalk
	}
	m := item.AsMapUsing(w.alloc)
	keys := make(value.FieldList, 0, len(t.Keys))
	for _, name := range t.Keys {
		if v, ok := m.GetUsing(w.alloc, name); ok {
			keys = append(keys, value.Field{Name: name, Value: v})
			continue
		}
		et, ok := w.schema.Resolve(t.ElementType)
		if !ok || et.Map == nil {
			return fieldpath.PathElement{}, errCreateWalk
		}
		if sf, _ := et.Map.FindField(name); sf.Default != nil {
			keys = append(keys, value.Field{Name: name, Value: value.NewValueInterface(sf.Default)})
		}
	}
	if len(keys) == 0 {
		return fieldpath.PathElement{}, errCreateWalk
	}
	keys.Sort()
	return fieldpath.PathElement{Key: &keys}, nil
}

// deduceAtomOf narrows atom to the kind of v, as the typed comparison does.
func deduceAtomOf(atom schema.Atom, v value.Value) schema.Atom {
	switch {
	case v == nil:
	case v.IsFloat(), v.IsInt(), v.IsString(), v.IsBool():
		if atom.Scalar != nil {
			return schema.Atom{Scalar: atom.Scalar}
		}
	case v.IsList():
		if atom.List != nil {
			return schema.Atom{List: atom.List}
		}
	case v.IsMap():
		if atom.Map != nil {
			return schema.Atom{Map: atom.Map}
		}
	}
	return atom
}

// sameAtom says whether a and b are the same atom: by identity first (both
// come from one schema), else by value.
func sameAtom(a, b schema.Atom) bool {
	if a.Scalar == b.Scalar && a.List == b.List && a.Map == b.Map {
		return true
	}
	return a.Equals(&b)
}
