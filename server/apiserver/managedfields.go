package apiserver

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// createFields computes the managed fields of a create without running the
// field manager's update pipeline: a create is an Update operation from
// nothing, so its one entry is every field the new object sets compared
// with an empty object of the kind, less the fields the field manager never
// tracks (stripMeta). The result is what managedfields.FieldManager's
// UpdateNoErrors writes for the same create (managedfields_test.go checks
// that), at a fraction of the cost: the empty object is typed once per kind,
// and the new object is walked once, by createWalk (the typed comparison
// with the empty object, which it reproduces, where it cannot).
type createFields struct {
	conv interface {
		ObjectToTyped(runtime.Object, ...typed.ValidationOptions) (*typed.TypedValue, error)
	}

	// stripped are the fields no manager owns (as the field manager's
	// stripMeta step): identity and system-maintained metadata.
	stripped *fieldpath.Set

	mu    sync.Mutex
	empty map[schema.GroupVersionKind]*typed.TypedValue

	// bufs are scratch buffers (*bytes.Buffer) for the fields' JSON, which
	// is then copied out at its exact size (fieldpath's ToJSON returns its
	// grown buffer: twice the garbage).
	bufs sync.Pool
}

func newCreateFields(conv interface {
	ObjectToTyped(runtime.Object, ...typed.ValidationOptions) (*typed.TypedValue, error)
}) *createFields {
	return &createFields{conv: conv, stripped: strippedFields(), empty: map[schema.GroupVersionKind]*typed.TypedValue{}}
}

func strippedFields() *fieldpath.Set {
	return fieldpath.NewSet(
		fieldpath.MakePathOrDie("apiVersion"),
		fieldpath.MakePathOrDie("kind"),
		fieldpath.MakePathOrDie("metadata"),
		fieldpath.MakePathOrDie("metadata", "name"),
		fieldpath.MakePathOrDie("metadata", "namespace"),
		fieldpath.MakePathOrDie("metadata", "creationTimestamp"),
		fieldpath.MakePathOrDie("metadata", "selfLink"),
		fieldpath.MakePathOrDie("metadata", "uid"),
		fieldpath.MakePathOrDie("metadata", "clusterName"),
		fieldpath.MakePathOrDie("metadata", "generation"),
		fieldpath.MakePathOrDie("metadata", "managedFields"),
		fieldpath.MakePathOrDie("metadata", "resourceVersion"),
	)
}

// emptyOf returns the typed empty object of k (the "live" object of a create).
func (c *createFields) emptyOf(k *kind) (*typed.TypedValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tv, ok := c.empty[k.gvk]; ok {
		return tv, nil
	}
	obj := k.newObj()
	obj.GetObjectKind().SetGroupVersionKind(k.gvk)
	tv, err := c.conv.ObjectToTyped(obj, typed.AllowDuplicates)
	if err != nil {
		return nil, fmt.Errorf("typed empty %s: %w", k.gvk, err)
	}
	c.empty[k.gvk] = tv
	return tv, nil
}

// set sets obj's managed fields to the single Update entry of manager
// creating it. ok is false when the object cannot take the fast path (it
// carries managed fields of its own, which the full field manager merges).
func (c *createFields) set(k *kind, obj runtime.Object, m metav1.Object, manager string, at metav1.Time) (ok bool, err error) {
	if mf := m.GetManagedFields(); len(mf) > 1 || len(mf) == 1 && !reflect.DeepEqual(mf[0], metav1.ManagedFieldsEntry{}) {
		return false, nil
	}
	// nil, or a request to reset them: tracking starts from nothing.
	m.SetManagedFields(nil)
	empty, err := c.emptyOf(k)
	if err != nil {
		return false, err
	}
	obj.GetObjectKind().SetGroupVersionKind(k.gvk)
	v, err := value.NewValueReflect(obj)
	if err != nil {
		return false, fmt.Errorf("reflect %s: %w", k.gvk.Kind, err)
	}
	cw := createWalk{schema: empty.Schema(), alloc: value.HeapAllocator}
	fs, err := cw.fields(empty.TypeRef(), empty.AsValue(), v)
	if err != nil {
		// A shape the walk leaves to the full comparison. The comparison
		// validates what it walks; the object was decoded into its Go
		// type, so it conforms to the schema by construction.
		cmp, err := empty.Compare(typed.AsTypedUnvalidated(v, empty.Schema(), empty.TypeRef()))
		if err != nil {
			return false, fmt.Errorf("managed fields of %s: %w", k.gvk.Kind, err)
		}
		fs = cmp.Modified.Union(cmp.Added).Difference(cmp.Removed)
	}
	fs = fs.Difference(c.stripped)
	if fs.Empty() {
		return true, nil
	}
	buf, _ := c.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	if err := fs.ToJSONStream(buf); err != nil {
		return false, fmt.Errorf("encode managed fields of %s: %w", k.gvk.Kind, err)
	}
	raw := bytes.Clone(buf.Bytes())
	c.bufs.Put(buf)
	if manager == "" {
		manager = "unknown"
	}
	m.SetManagedFields([]metav1.ManagedFieldsEntry{{
		Manager:    manager,
		Operation:  metav1.ManagedFieldsOperationUpdate,
		APIVersion: k.gvk.GroupVersion().String(),
		Time:       &at,
		FieldsType: "FieldsV1",
		FieldsV1:   &metav1.FieldsV1{Raw: raw},
	}})
	return true, nil
}
