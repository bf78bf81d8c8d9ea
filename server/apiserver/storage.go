package apiserver

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"strconv"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/orch-dev/orch/store"
)

// Transformer turns stored values to and from their at-rest form (Secrets
// are encrypted with it). key is the value's storage key, bound to the
// ciphertext so a value copied under another key does not decrypt.
type Transformer interface {
	TransformToStorage(ctx context.Context, data []byte, key string) ([]byte, error)
	TransformFromStorage(ctx context.Context, data []byte, key string) ([]byte, error)
}

// objects stores typed objects of every kind in the store, encoded as
// protobuf (as upstream keeps them in etcd), their resourceVersion taken from
// the store's modify revision.
type objects struct {
	st     store.Store
	scheme *runtime.Scheme
	proto  *protobuf.Serializer
	enc    Transformer // may be nil
	json   *jsonCache
}

func newObjects(st store.Store, scheme *runtime.Scheme, enc Transformer) *objects {
	return &objects{st: st, scheme: scheme, proto: protobuf.NewSerializer(scheme, scheme), enc: enc, json: newJSONCache(DefaultJSONCacheBytes)}
}

// key is /registry/<group>/<resource>/<namespace>/<name>; the core group is
// spelled "core".
func (k *kind) key(namespace, name string) string {
	return k.prefix(namespace) + name
}

// prefix of all objects of the kind in a namespace ("" for all namespaces).
func (k *kind) prefix(namespace string) string {
	g := k.gr.Group
	if g == "" {
		g = "core"
	}
	p := "/registry/" + g + "/" + k.gr.Resource + "/"
	if k.namespaced && namespace != "" {
		p += namespace + "/"
	}
	return p
}

func (o *objects) encode(ctx context.Context, k *kind, obj runtime.Object) ([]byte, error) {
	obj.GetObjectKind().SetGroupVersionKind(k.gvk)
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	var out ownedWriter
	err = o.proto.Encode(obj, &out)
	m.SetResourceVersion(rv)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k.gvk.Kind, err)
	}
	if k.encrypt && o.enc != nil {
		return o.enc.TransformToStorage(ctx, out.b, k.key(m.GetNamespace(), m.GetName()))
	}
	return out.b, nil
}

// ownedWriter keeps what is written to it. The protobuf serializer's Encode
// writes an object with a single Write of a buffer it has just allocated
// for it and never touches again: that buffer is kept as it is, not copied
// into a growing one. Should a second Write come, the bytes are copied
// into a new slice.
type ownedWriter struct{ b []byte }

func (w *ownedWriter) Write(p []byte) (int, error) {
	if w.b == nil {
		w.b = p
	} else {
		w.b = append(slices.Clip(w.b), p...)
	}
	return len(p), nil
}

func (o *objects) decode(ctx context.Context, k *kind, kv store.KeyValue) (runtime.Object, error) {
	data := kv.Value
	if k.encrypt && o.enc != nil {
		var err error
		if data, err = o.enc.TransformFromStorage(ctx, data, kv.Key); err != nil {
			return nil, fmt.Errorf("decrypt %s: %w", kv.Key, err)
		}
	}
	obj := k.newObj()
	if _, _, err := o.proto.Decode(data, nil, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	obj.GetObjectKind().SetGroupVersionKind(k.gvk)
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
	return obj, nil
}

func (o *objects) get(ctx context.Context, k *kind, ns, name string) (runtime.Object, error) {
	kv, err := o.st.Get(ctx, k.key(ns, name))
	if err != nil {
		return nil, storeError(k, name, err)
	}
	return o.decode(ctx, k, kv)
}

func (o *objects) create(ctx context.Context, k *kind, obj runtime.Object) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	data, err := o.encode(ctx, k, obj)
	if err != nil {
		return nil, err
	}
	rev, err := o.st.Create(ctx, k.key(m.GetNamespace(), m.GetName()), data)
	if err != nil {
		return nil, storeError(k, m.GetName(), err)
	}
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	return obj, nil
}

// update writes obj if the stored revision still equals its resourceVersion.
func (o *objects) update(ctx context.Context, k *kind, obj runtime.Object) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	expected, err := parseRV(m.GetResourceVersion())
	if err != nil {
		return nil, err
	}
	data, err := o.encode(ctx, k, obj)
	if err != nil {
		return nil, err
	}
	rev, err := o.st.Update(ctx, k.key(m.GetNamespace(), m.GetName()), data, expected)
	if err != nil {
		return nil, storeError(k, m.GetName(), err)
	}
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	return obj, nil
}

func (o *objects) delete(ctx context.Context, k *kind, ns, name string, rv int64) (runtime.Object, error) {
	kv, err := o.st.Delete(ctx, k.key(ns, name), rv)
	if err != nil {
		return nil, storeError(k, name, err)
	}
	o.json.drop(kv.Key)
	return o.decode(ctx, k, kv)
}

// guaranteedUpdate reads the object, applies fn and writes the result,
// retrying when another writer got there first. fn returning a nil object
// means nothing to do.
func (o *objects) guaranteedUpdate(ctx context.Context, k *kind, ns, name string, fn func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	for attempt := 0; ; attempt++ {
		cur, err := o.get(ctx, k, ns, name)
		if err != nil {
			return nil, err
		}
		next, err := fn(cur)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return cur, nil
		}
		out, err := o.update(ctx, k, next)
		if err == nil || !apierrors.IsConflict(err) || attempt > 16 {
			return out, err
		}
	}
}

func parseRV(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q", s))
	}
	return v, nil
}

// storeError maps store errors to the Kubernetes errors clients expect.
func storeError(k *kind, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apierrors.NewNotFound(k.gr, name)
	case errors.Is(err, store.ErrExists):
		return apierrors.NewAlreadyExists(k.gr, name)
	case errors.Is(err, store.ErrConflict):
		return apierrors.NewConflict(k.gr, name, errors.New(conflictMessage))
	case errors.Is(err, store.ErrCompacted):
		return apierrors.NewResourceExpired("The resourceVersion for the provided watch is too old.")
	case errors.Is(err, store.ErrFutureRevision):
		return apierrors.NewTimeoutError("Too large resource version", 1)
	}
	return apierrors.NewInternalError(err)
}

const conflictMessage = "the object has been modified; please apply your changes to the latest version and try again"

// parallelMin is the batch size from which decoding and encoding of list
// items is spread over the CPUs.
const parallelMin = 256

// decodeAll decodes kvs, in parallel for large pages.
func (o *objects) decodeAll(ctx context.Context, k *kind, kvs []store.KeyValue) ([]runtime.Object, error) {
	out := make([]runtime.Object, len(kvs))
	err := parallel(len(kvs), func(i int) error {
		obj, err := o.decode(ctx, k, kvs[i])
		out[i] = obj
		return err
	})
	return out, err
}

// parallel runs fn(0..n-1) over GOMAXPROCS workers when n is large, else
// in order; it returns the first error.
func parallel(n int, fn func(i int) error) error {
	workers := goruntime.GOMAXPROCS(0)
	if n < parallelMin || workers < 2 {
		for i := 0; i < n; i++ {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	chunk := (n + workers - 1) / workers
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		g.Go(func() error {
			for i := start; i < end; i++ {
				if err := fn(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
