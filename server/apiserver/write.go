package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// writeOpts are the query options of a mutating request.
type writeOpts struct {
	dryRun          bool
	fieldManager    string
	fieldValidation string // Strict, Warn or Ignore
	force           bool
	// managed: managed fields were already computed (server-side apply).
	managed bool
}

func parseWriteOpts(r *http.Request, defaultManager string) (writeOpts, error) {
	q := query(r)
	o := writeOpts{fieldManager: q.Get("fieldManager"), fieldValidation: q.Get("fieldValidation")}
	for _, d := range q["dryRun"] {
		if d != "All" {
			return o, apierrors.NewBadRequest(fmt.Sprintf("unsupported dry run option %q, only 'All' is supported", d))
		}
		o.dryRun = true
	}
	switch o.fieldValidation {
	case "":
		o.fieldValidation = "Warn"
	case "Strict", "Warn", "Ignore":
	default:
		return o, apierrors.NewBadRequest(fmt.Sprintf("fieldValidation must be one of Ignore, Warn or Strict, not %q", o.fieldValidation))
	}
	o.force = q.Get("force") == "true"
	if o.fieldManager == "" {
		o.fieldManager = defaultManager
	}
	if len(o.fieldManager) > 128 {
		return o, apierrors.NewBadRequest("fieldManager must not be longer than 128 characters")
	}
	return o, nil
}

// managerFromAgent names the field manager of a request without one, as
// upstream: the user agent up to its first slash.
func managerFromAgent(r *http.Request) string {
	ua := r.Header.Get("User-Agent")
	if i := strings.Index(ua, "/"); i >= 0 {
		ua = ua[:i]
	}
	if ua == "" {
		return "unknown"
	}
	if len(ua) > 128 {
		ua = ua[:128]
	}
	return ua
}

// readBody reads a request body, refusing bodies over MaxBodyBytes.
func readBody(r *http.Request) ([]byte, error) {
	var b []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= MaxBodyBytes {
		// Read into a buffer of the announced size (and one byte more, to
		// see the end) rather than growing one; what a client announces
		// beyond 64 KB it has to send before the server allocates it.
		// (Not bytes.Buffer.ReadFrom: it keeps 512 bytes free before
		// each read, so it doubles an exactly sized buffer.)
		b, err = readInto(make([]byte, 0, min(n+1, 64<<10)), io.LimitReader(r.Body, MaxBodyBytes+1))
	} else {
		b, err = io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("read request body: %v", err))
	}
	if len(b) > MaxBodyBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", MaxBodyBytes))
	}
	return b, nil
}

// readInto appends what r yields until EOF to b, growing it only when full.
func readInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// decodeBody decodes a request body into an object of the served version,
// reporting unknown and duplicate fields per fieldValidation.
func (s *Server) decodeBody(r *http.Request, body []byte, sv *served, gvk schema.GroupVersionKind, into runtime.Object, o writeOpts, w http.ResponseWriter) (runtime.Object, error) {
	ct := r.Header.Get("Content-Type")
	mt := "application/json"
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, unsupportedMediaType(ct)
		}
	}
	if len(body) == 0 {
		return nil, apierrors.NewBadRequest("the request body is empty")
	}
	var dec runtime.Decoder
	switch mt {
	case "application/json", "application/yaml":
		dec = s.decoders[bodyDecoder(mt == "application/yaml", o.fieldValidation != "Ignore")]
	case "application/vnd.kubernetes.protobuf":
		dec = s.objs.proto
	default:
		return nil, unsupportedMediaType(mt)
	}
	obj, got, err := dec.Decode(body, &gvk, into)
	if err != nil {
		if runtime.IsStrictDecodingError(err) && obj != nil {
			if o.fieldValidation == "Strict" {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			for _, e := range strictErrors(err) {
				w.Header().Add("Warning", fmt.Sprintf(`299 - %q`, e))
			}
		} else {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized or malformed: %v", err))
		}
	}
	if got != nil && (got.Group != gvk.Group || got.Version != gvk.Version || got.Kind != gvk.Kind) {
		if got.GroupVersion() != gvk.GroupVersion() {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", got.GroupVersion(), gvk.GroupVersion()))
		}
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (%s)", got.Kind, gvk.Kind))
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, nil
}

// bodyDecoder is the index in Server.decoders of the JSON (or YAML)
// decoder, strict or not. The decoders hold no state of a request.
func bodyDecoder(yaml, strict bool) int {
	i := 0
	if yaml {
		i |= 1
	}
	if strict {
		i |= 2
	}
	return i
}

func strictErrors(err error) []string {
	if se, ok := runtime.AsStrictDecodingError(err); ok {
		var out []string
		for _, e := range se.Errors() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// validateObject runs the metadata and kind checks and returns a 422.
func (s *Server) validateObject(k *kind, obj, old runtime.Object) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if k.nameIsLabel {
		nameFn = apivalidation.NameIsDNSLabel
	}
	var errs field.ErrorList
	if old == nil {
		errs = apivalidation.ValidateObjectMetaAccessor(m, k.namespaced, nameFn, field.NewPath("metadata"))
	} else {
		om, _ := meta.Accessor(old)
		errs = apivalidation.ValidateObjectMetaAccessorUpdate(m, om, field.NewPath("metadata"))
		errs = append(errs, apivalidation.ValidateObjectMetaAccessor(m, k.namespaced, nameFn, field.NewPath("metadata"))...)
	}
	if k.validate != nil {
		errs = append(errs, k.validate(obj, old)...)
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(k.gvk.GroupKind(), m.GetName(), errs)
	}
	return nil
}

// fieldOf returns the named top-level struct field of a typed object.
func fieldOf(obj runtime.Object, name string) (reflect.Value, bool) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer {
		return reflect.Value{}, false
	}
	f := v.Elem().FieldByName(name)
	return f, f.IsValid()
}

// copyField sets dst.name = src.name.
func copyField(dst, src runtime.Object, name string) {
	d, ok1 := fieldOf(dst, name)
	sv, ok2 := fieldOf(src, name)
	if ok1 && ok2 && d.CanSet() {
		d.Set(sv)
	}
}

// specChanged says whether anything but metadata and status differs.
func specChanged(obj, old runtime.Object) bool {
	a, b := reflect.ValueOf(obj).Elem(), reflect.ValueOf(old).Elem()
	for i := 0; i < a.NumField(); i++ {
		switch a.Type().Field(i).Name {
		case "TypeMeta", "ObjectMeta", "Status":
			continue
		}
		if !apiequality.Semantic.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			return true
		}
	}
	return false
}

// prepareCreate fills the system fields of a new object.
func (s *Server) prepareCreate(k *kind, obj runtime.Object, m metav1.Object) {
	m.SetUID(types.UID(uuid.NewUUID()))
	m.SetCreationTimestamp(now())
	m.SetResourceVersion("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetSelfLink("")
	if !k.noGeneration {
		m.SetGeneration(1)
	}
	if k.hasStatus && k.gvk.Kind != "Pod" && k.gvk.Kind != "Namespace" && k.gvk.Kind != "Node" && k.gvk.Kind != "Service" {
		// Workload status is the controllers' to write.
		if st, ok := fieldOf(obj, "Status"); ok {
			st.Set(reflect.Zero(st.Type()))
		}
	}
	if k.defaults != nil {
		k.defaults(obj)
	}
}

// prepareUpdate carries over what a write to the main resource may not
// change, and bumps generation when the spec changed.
func (s *Server) prepareUpdate(k *kind, obj, old runtime.Object, subresource string) {
	m, _ := meta.Accessor(obj)
	om, _ := meta.Accessor(old)
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetDeletionTimestamp(om.GetDeletionTimestamp())
	m.SetDeletionGracePeriodSeconds(om.GetDeletionGracePeriodSeconds())
	m.SetGeneration(om.GetGeneration())
	if m.GetNamespace() == "" {
		m.SetNamespace(om.GetNamespace())
	}
	switch subresource {
	case "status":
		// A status write changes only status (and, for nodes and pods, the
		// conditions they report); metadata changes other than labels and
		// annotations are dropped, as upstream.
		for _, f := range []string{"Spec"} {
			copyField(obj, old, f)
		}
		m.SetOwnerReferences(om.GetOwnerReferences())
		m.SetFinalizers(om.GetFinalizers())
	default:
		if k.hasStatus {
			copyField(obj, old, "Status")
		}
	}
	if k.defaults != nil {
		k.defaults(obj)
	}
	if !k.noGeneration && subresource == "" && specChanged(obj, old) {
		m.SetGeneration(om.GetGeneration() + 1)
	}
}

// readObject reads the write options and the body of a create or update
// and returns the object in the storage version.
func (s *Server) readObject(w http.ResponseWriter, r *http.Request, sv *served) (runtime.Object, writeOpts, error) {
	o, err := parseWriteOpts(r, managerFromAgent(r))
	if err != nil {
		return nil, o, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, o, err
	}
	obj, err := s.decodeBody(r, body, sv, sv.gvk(), sv.newObj(), o, w)
	if err != nil {
		return nil, o, err
	}
	if obj, err = s.toStorage(sv, obj); err != nil {
		return nil, o, apierrors.NewBadRequest(err.Error())
	}
	return obj, o, nil
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	obj, o, err := s.readObject(w, r, sv)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := nodeMayCreate(r.Context(), sv.k, obj); err != nil {
		s.writeError(w, r, err)
		return
	}
	created, err := s.create(r.Context(), sv.k, ri.namespace, obj, o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeServed(w, r, sv, http.StatusCreated, created)
}

// writeServed writes a stored object in the served version.
func (s *Server) writeServed(w http.ResponseWriter, r *http.Request, sv *served, code int, obj runtime.Object) {
	out, err := s.toServed(sv, obj)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObject(w, r, code, out)
}

// create runs defaulting, validation and admission and stores obj.
func (s *Server) create(ctx context.Context, k *kind, ns string, obj runtime.Object, o writeOpts) (runtime.Object, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if k.namespaced {
		if m.GetNamespace() == "" {
			m.SetNamespace(ns)
		}
		if ns != "" && m.GetNamespace() != ns {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
	} else {
		m.SetNamespace("")
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + randSuffix())
	}
	s.prepareCreate(k, obj, m)
	if err := s.validateObject(k, obj, nil); err != nil {
		return nil, err
	}
	if err := s.admitCreate(ctx, k, obj, m, o.dryRun); err != nil {
		return nil, err
	}
	if !o.managed {
		obj = s.trackCreate(k, obj, m, o.fieldManager)
	}
	if o.dryRun {
		return obj, nil
	}
	out, err := s.objs.create(ctx, k, obj)
	if err != nil {
		s.releaseOnFailure(ctx, k, obj)
		return nil, err
	}
	return out, nil
}

// trackCreate records manager as the owner of every field obj sets, the
// managed fields of a create.
func (s *Server) trackCreate(k *kind, obj runtime.Object, m metav1.Object, manager string) runtime.Object {
	ok, err := s.created.set(k, obj, m, manager, now())
	if err != nil {
		s.log.Warn("managed fields of a create", "kind", k.gvk.Kind, "err", err)
	}
	if ok {
		return obj
	}
	fm, err := s.fieldManager(k, "")
	if err != nil {
		return obj
	}
	return fm.UpdateNoErrors(k.newObj(), obj, manager)
}

func (s *Server) serveUpdate(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	if ri.name == "" {
		s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, "update"))
		return
	}
	obj, o, err := s.readObject(w, r, sv)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	m, _ := meta.Accessor(obj)
	if m.GetName() != ri.name {
		s.writeError(w, r, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), ri.name)))
		return
	}
	if sv.k.namespaced && m.GetNamespace() != "" && m.GetNamespace() != ri.namespace {
		s.writeError(w, r, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request"))
		return
	}
	out, code, err := s.update(r.Context(), sv.k, ri.namespace, ri.name, ri.subresource, obj, o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeServed(w, r, sv, code, out)
}

// update replaces the stored object with obj (its resourceVersion, when set,
// is the precondition). It returns the status code: 200, or 201 when a kind
// that allows it was created.
func (s *Server) update(ctx context.Context, k *kind, ns, name, subresource string, obj runtime.Object, o writeOpts) (runtime.Object, int, error) {
	m, _ := meta.Accessor(obj)
	if k.namespaced {
		m.SetNamespace(ns)
	}
	old, err := s.objs.get(ctx, k, ns, name)
	if err != nil {
		if apierrors.IsNotFound(err) && k.allowCreateOnUpdate && subresource == "" {
			out, err := s.create(ctx, k, ns, obj, o)
			return out, http.StatusCreated, err
		}
		return nil, 0, err
	}
	om, _ := meta.Accessor(old)
	if m.GetResourceVersion() != "" && m.GetResourceVersion() != om.GetResourceVersion() {
		return nil, 0, apierrors.NewConflict(k.gr, name, errors.New(conflictMessage))
	}
	if m.GetUID() != "" && m.GetUID() != om.GetUID() {
		return nil, 0, apierrors.NewConflict(k.gr, name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", m.GetUID(), om.GetUID()))
	}
	m.SetResourceVersion(om.GetResourceVersion())
	out, err := s.commitUpdate(ctx, k, subresource, obj, old, o, nil)
	return out, http.StatusOK, err
}

// commitUpdate prepares, validates, tracks managed fields and writes an
// update of old to obj (obj carries old's resourceVersion). A fieldManager
// result from an apply may be passed in as applied.
func (s *Server) commitUpdate(ctx context.Context, k *kind, subresource string, obj, old runtime.Object, o writeOpts, applied runtime.Object) (runtime.Object, error) {
	s.prepareUpdate(k, obj, old, subresource)
	if err := s.validateObject(k, obj, old); err != nil {
		return nil, err
	}
	if err := s.admitUpdate(ctx, k, obj, old); err != nil {
		return nil, err
	}
	if applied == nil {
		if fm, err := s.fieldManager(k, subresource); err == nil {
			obj = fm.UpdateNoErrors(old, obj, o.fieldManager)
		}
	}
	m, _ := meta.Accessor(obj)
	// A finalizer-held object whose last finalizer went away is deleted now.
	if m.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 && !namespaceHasSpecFinalizers(obj) &&
		(m.GetDeletionGracePeriodSeconds() == nil || *m.GetDeletionGracePeriodSeconds() == 0) {
		if o.dryRun {
			return obj, nil
		}
		rv, _ := parseRV(m.GetResourceVersion())
		out, err := s.objs.delete(ctx, k, m.GetNamespace(), m.GetName(), rv)
		if err == nil {
			s.releaseOnDelete(ctx, k, out)
		}
		return out, err
	}
	if semanticEqual(obj, old) {
		return old, nil
	}
	if o.dryRun {
		return obj, nil
	}
	return s.objs.update(ctx, k, obj)
}

// semanticEqual is apiequality.Semantic.DeepEqual(a, b) of two objects,
// comparing status first, then metadata, then the rest: most writes change
// status (controllers, the scheduler), and equality is the conjunction of
// the fields', so the order changes only how soon a difference is found.
func semanticEqual(a, b runtime.Object) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || va.Kind() != reflect.Pointer || va.IsNil() || vb.IsNil() || va.Elem().Kind() != reflect.Struct {
		return apiequality.Semantic.DeepEqual(a, b)
	}
	va, vb = va.Elem(), vb.Elem()
	t := va.Type()
	first := [2]int{-1, -1}
	if f, ok := t.FieldByName("Status"); ok && len(f.Index) == 1 && f.IsExported() {
		first[0] = f.Index[0]
	}
	if f, ok := t.FieldByName("ObjectMeta"); ok && len(f.Index) == 1 && f.IsExported() {
		first[1] = f.Index[0]
	}
	field := func(i int) bool {
		return apiequality.Semantic.DeepEqual(va.Field(i).Addr().Interface(), vb.Field(i).Addr().Interface())
	}
	for _, i := range first {
		if i >= 0 && !field(i) {
			return false
		}
	}
	for i := 0; i < t.NumField(); i++ {
		if i == first[0] || i == first[1] {
			continue
		}
		if !t.Field(i).IsExported() {
			return apiequality.Semantic.DeepEqual(a, b)
		}
		if !field(i) {
			return false
		}
	}
	return true
}

func randSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	u := uuid.NewUUID()
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[int(u[i])%len(alphabet)]
	}
	return string(b)
}

// jsonOf marshals an object of the served version.
func (s *Server) jsonOf(sv *served, obj runtime.Object) ([]byte, error) {
	so, err := s.toServed(sv, obj)
	if err != nil {
		return nil, err
	}
	so.GetObjectKind().SetGroupVersionKind(sv.gvk())
	return json.Marshal(so)
}
