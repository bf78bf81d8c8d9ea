package apiserver

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func (s *Server) servePatch(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	if ri.name == "" {
		s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, "patch"))
		return
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		s.writeError(w, r, unsupportedMediaType(r.Header.Get("Content-Type")))
		return
	}
	pt := types.PatchType(ct)
	defaultManager := managerFromAgent(r)
	if pt == types.ApplyYAMLPatchType || pt == types.ApplyCBORPatchType {
		defaultManager = ""
	}
	o, err := parseWriteOpts(r, defaultManager)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := readBody(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var out runtime.Object
	code := http.StatusOK
	switch pt {
	case types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType:
		out, err = s.patch(r, w, sv, ri, pt, body, o)
	case types.ApplyYAMLPatchType:
		if o.fieldManager == "" {
			err = apierrors.NewBadRequest("PATCH requests with an apply patch type must specify a fieldManager")
			break
		}
		out, code, err = s.apply(r.Context(), sv, ri, body, o)
	default:
		err = unsupportedMediaType(ct)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeServed(w, r, sv, code, out)
}

// patch applies a JSON, merge or strategic merge patch, retrying when the
// object changed underneath unless the patch pins a resourceVersion.
func (s *Server) patch(r *http.Request, w http.ResponseWriter, sv *served, ri requestInfo, pt types.PatchType, body []byte, o writeOpts) (runtime.Object, error) {
	ctx := r.Context()
	var jp jsonpatch.Patch
	if pt == types.JSONPatchType {
		var err error
		if jp, err = jsonpatch.DecodePatch(body); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid JSON patch: %v", err))
		}
	}
	if err := checkPatchDuplicates(w, pt, body, o); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		old, err := s.objs.get(ctx, sv.k, ri.namespace, ri.name)
		if err != nil {
			return nil, err
		}
		cur, err := s.jsonOf(sv, old)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		var patched []byte
		switch pt {
		case types.JSONPatchType:
			patched, err = jp.Apply(cur)
		case types.MergePatchType:
			patched, err = jsonpatch.MergePatch(cur, body)
		case types.StrategicMergePatchType:
			schema := sv.newObj()
			patched, err = strategicpatch.StrategicMergePatch(cur, body, schema)
		}
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("unable to apply patch: %v", err))
		}
		po := o
		po.fieldValidation = o.fieldValidation
		req := r.Clone(ctx)
		req.Header.Set("Content-Type", "application/json")
		obj, err := s.decodeBody(req, patched, sv, sv.gvk(), sv.newObj(), po, w)
		if err != nil {
			return nil, err
		}
		if obj, err = s.toStorage(sv, obj); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		m, _ := meta.Accessor(obj)
		om, _ := meta.Accessor(old)
		if m.GetName() != ri.name {
			return nil, apierrors.NewBadRequest("metadata.name: Invalid value: the name of the object does not match the name on the URL")
		}
		pinned := m.GetResourceVersion() != om.GetResourceVersion()
		if pinned {
			return nil, apierrors.NewConflict(sv.k.gr, ri.name, errors.New(conflictMessage))
		}
		if sv.k.namespaced {
			m.SetNamespace(ri.namespace)
		}
		out, err := s.commitUpdate(ctx, sv.k, ri.subresource, obj, old, o, nil)
		if apierrors.IsConflict(err) && attempt < 8 {
			continue
		}
		return out, err
	}
}

// checkPatchDuplicates refuses (fieldValidation=Strict) or warns about
// (Warn) a merge or strategic merge patch that names a field twice, as
// kube-apiserver does: decoding the patch keeps only the last, so the rest
// would be lost without a word. Unknown fields are caught when the patched
// object is decoded.
func checkPatchDuplicates(w http.ResponseWriter, pt types.PatchType, body []byte, o writeOpts) error {
	if o.fieldValidation == "Ignore" || (pt != types.MergePatchType && pt != types.StrategicMergePatchType) {
		return nil
	}
	var v interface{}
	dups, err := kjson.UnmarshalStrict(body, &v, kjson.DisallowDuplicateFields)
	if err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("unable to apply patch: %v", err))
	}
	if len(dups) == 0 {
		return nil
	}
	if o.fieldValidation == "Strict" {
		return apierrors.NewBadRequest(runtime.NewStrictDecodingError(dups).Error())
	}
	for _, e := range dups {
		w.Header().Add("Warning", fmt.Sprintf(`299 - %q`, e.Error()))
	}
	return nil
}

// apply is server-side apply: the field manager merges the applied
// configuration into the live object (or a new one) and reports conflicts.
func (s *Server) apply(ctx context.Context, sv *served, ri requestInfo, body []byte, o writeOpts) (runtime.Object, int, error) {
	k := sv.k
	patchObj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(body, &patchObj.Object); err != nil {
		return nil, 0, apierrors.NewBadRequest(fmt.Sprintf("error decoding YAML: %v", err))
	}
	if patchObj.Object == nil {
		return nil, 0, apierrors.NewBadRequest("the apply configuration is empty")
	}
	gvk := patchObj.GroupVersionKind()
	if gvk.Kind != k.gvk.Kind || gvk.GroupVersion() != sv.gv {
		return nil, 0, apierrors.NewBadRequest(fmt.Sprintf("the apply configuration's apiVersion/kind (%s, %s) does not match the request (%s, %s)",
			gvk.GroupVersion(), gvk.Kind, sv.gv, k.gvk.Kind))
	}
	if patchObj.GetName() != "" && patchObj.GetName() != ri.name {
		return nil, 0, apierrors.NewBadRequest("the name of the apply configuration does not match the name on the URL")
	}
	if k.namespaced && patchObj.GetNamespace() != "" && patchObj.GetNamespace() != ri.namespace {
		return nil, 0, apierrors.NewBadRequest("the namespace of the apply configuration does not match the namespace sent on the request")
	}
	if sv.legacy {
		// Apply legacy defaults to the configuration and address it in the
		// storage version: the old Deployment versions share its fields.
		typed := sv.newObj()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(patchObj.Object, typed); err != nil {
			return nil, 0, apierrors.NewBadRequest(err.Error())
		}
		if sv.legacyDefaults != nil {
			// Only what the configuration leaves out and the old version
			// defaulted (the selector from the template's labels) is added.
			hadSelector := legacySelector(typed) != nil
			sv.legacyDefaults(typed)
			if sel := legacySelector(typed); sel != nil && !hadSelector {
				if err := unstructured.SetNestedField(patchObj.Object, sel, "spec", "selector"); err != nil {
					return nil, 0, apierrors.NewBadRequest(err.Error())
				}
			}
		}
		patchObj.SetAPIVersion(k.gvk.GroupVersion().String())
	}
	if o.fieldValidation == "Strict" {
		typed := k.newObj()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(patchObj.Object, typed, true); err != nil {
			return nil, 0, apierrors.NewBadRequest(err.Error())
		}
	}
	fm, err := s.fieldManager(k, ri.subresource)
	if err != nil {
		return nil, 0, apierrors.NewInternalError(err)
	}
	for attempt := 0; ; attempt++ {
		old, err := s.objs.get(ctx, k, ri.namespace, ri.name)
		creating := apierrors.IsNotFound(err)
		if err != nil && !creating {
			return nil, 0, err
		}
		live := old
		if creating {
			if ri.subresource != "" {
				return nil, 0, err
			}
			live = k.newObj()
			lm, _ := meta.Accessor(live)
			lm.SetName(ri.name)
			lm.SetNamespace(ri.namespace)
			live.GetObjectKind().SetGroupVersionKind(k.gvk)
		}
		applied, err := fm.Apply(live, patchObj.DeepCopy(), o.fieldManager, o.force)
		if err != nil {
			if apierrors.IsConflict(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				return nil, 0, err
			}
			return nil, 0, apierrors.NewBadRequest(err.Error())
		}
		typed := applied
		if u, isU := typed.(*unstructured.Unstructured); isU {
			t := k.newObj()
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, t); err != nil {
				return nil, 0, apierrors.NewInternalError(err)
			}
			typed = t
		}
		typed.GetObjectKind().SetGroupVersionKind(k.gvk)
		if creating {
			out, err := s.create(ctx, k, ri.namespace, typed, writeOpts{dryRun: o.dryRun, fieldManager: o.fieldManager, managed: true})
			if apierrors.IsAlreadyExists(err) && attempt < 8 {
				continue
			}
			return out, http.StatusCreated, err
		}
		m, _ := meta.Accessor(typed)
		om, _ := meta.Accessor(old)
		m.SetResourceVersion(om.GetResourceVersion())
		out, err := s.commitUpdate(ctx, k, ri.subresource, typed, old, o, typed)
		if apierrors.IsConflict(err) && attempt < 8 {
			continue
		}
		return out, http.StatusOK, err
	}
}

// legacySelector is the spec.selector of an old-version Deployment as
// unstructured content, or nil.
func legacySelector(obj runtime.Object) map[string]interface{} {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil
	}
	sel, ok, _ := unstructured.NestedMap(u, "spec", "selector")
	if !ok {
		return nil
	}
	return sel
}
