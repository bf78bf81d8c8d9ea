package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// output says how the client wants objects rendered.
type output struct {
	info runtime.SerializerInfo
	// as is "", "Table", "PartialObjectMetadata" or "PartialObjectMetadataList".
	as string
	// asGV is the meta.k8s.io version of the Table or metadata form.
	asGV schema.GroupVersion
}

// negotiate picks the response format from the Accept header.
func (s *Server) negotiate(r *http.Request) (output, error) {
	accept := r.Header.Get("Accept")
	if accept == "" {
		accept = "application/json"
	}
	for _, clause := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(clause))
		if err != nil {
			continue
		}
		if mt == "*/*" || mt == "application/*" {
			mt = "application/json"
		}
		var info runtime.SerializerInfo
		found := false
		for _, si := range s.codecs.SupportedMediaTypes() {
			if si.MediaType == mt {
				info, found = si, true
				break
			}
		}
		if !found {
			continue
		}
		out := output{info: info}
		if as := params["as"]; as != "" {
			if params["g"] != "meta.k8s.io" || (params["v"] != "v1" && params["v"] != "v1beta1") {
				continue
			}
			switch as {
			case "Table", "PartialObjectMetadata", "PartialObjectMetadataList":
			default:
				continue
			}
			out.as = as
			out.asGV = schema.GroupVersion{Group: "meta.k8s.io", Version: params["v"]}
		}
		return out, nil
	}
	return output{}, apierrors.NewGenericServerResponse(http.StatusNotAcceptable, "", schema.GroupResource{}, "",
		fmt.Sprintf("only the following media types are accepted: %s", strings.Join(s.mediaTypes(), ", ")), 0, false)
}

func (s *Server) mediaTypes() []string {
	var out []string
	for _, si := range s.codecs.SupportedMediaTypes() {
		out = append(out, si.MediaType)
	}
	return out
}

// encoder returns the serializer for the output, pretty when asked.
func (o output) encoder(r *http.Request) runtime.Encoder {
	if p := query(r).Get("pretty"); (p == "true" || p == "1") && o.info.PrettySerializer != nil {
		return o.info.PrettySerializer
	}
	return o.info.Serializer
}

// writeObject writes one object with the given status code.
func (s *Server) writeObject(w http.ResponseWriter, r *http.Request, code int, obj runtime.Object) {
	out, err := s.negotiate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObjectAs(w, r, out, code, obj)
}

func (s *Server) writeObjectAs(w http.ResponseWriter, r *http.Request, out output, code int, obj runtime.Object) {
	buf, _ := s.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = bytes.NewBuffer(make([]byte, 0, 8<<10))
	}
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			s.bufs.Put(buf)
		}
	}()
	if err := out.encoder(r).Encode(obj, buf); err != nil {
		s.log.Error("encode response", "err", err, "type", fmt.Sprintf("%T", obj))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", out.info.MediaType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) writeJSON(w http.ResponseWriter, code int, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError writes err as a Kubernetes Status with its code and reason.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var status *metav1.Status
	if se, ok := err.(apierrors.APIStatus); ok {
		st := se.Status()
		status = &st
	} else {
		status = &apierrors.NewInternalError(err).ErrStatus
	}
	status.Kind = "Status"
	status.APIVersion = "v1"
	if status.Status == "" {
		status.Status = metav1.StatusFailure
	}
	code := int(status.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	if code >= 500 {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", status.Message)
	}
	if code == http.StatusTooManyRequests || code == http.StatusGatewayTimeout {
		if status.Details != nil && status.Details.RetryAfterSeconds > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(status.Details.RetryAfterSeconds)))
		}
	}
	out, nerr := s.negotiate(r)
	if nerr != nil || out.as != "" {
		out = output{info: s.jsonInfo()}
	}
	s.writeObjectAs(w, r, out, code, status)
}

func (s *Server) jsonInfo() runtime.SerializerInfo {
	for _, si := range s.codecs.SupportedMediaTypes() {
		if si.MediaType == runtime.ContentTypeJSON {
			return si
		}
	}
	return s.codecs.SupportedMediaTypes()[0]
}

// toServed converts a stored object to the version the request named.
func (s *Server) toServed(sv *served, obj runtime.Object) (runtime.Object, error) {
	if !sv.legacy {
		return obj, nil
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out := sv.newObj()
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("convert to %s: %w", sv.gv, err)
	}
	out.GetObjectKind().SetGroupVersionKind(sv.gvk())
	return out, nil
}

// toStorage converts an object of the served version to the storage version.
func (s *Server) toStorage(sv *served, obj runtime.Object) (runtime.Object, error) {
	if !sv.legacy {
		obj.GetObjectKind().SetGroupVersionKind(sv.k.gvk)
		return obj, nil
	}
	if sv.legacyDefaults != nil {
		sv.legacyDefaults(obj)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out := sv.k.newObj()
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("convert from %s: %w", sv.gv, err)
	}
	out.GetObjectKind().SetGroupVersionKind(sv.k.gvk)
	return out, nil
}

// render turns stored objects into the response body object: the served
// version, a Table, or metadata only.
func (s *Server) renderOne(sv *served, out output, obj runtime.Object, withColumns bool) (runtime.Object, error) {
	switch out.as {
	case "Table":
		return s.table(sv, []runtime.Object{obj}, withColumns, out.asGV, metav1.ListMeta{})
	case "PartialObjectMetadata", "PartialObjectMetadataList":
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		pom := &metav1.PartialObjectMetadata{ObjectMeta: *objectMetaOf(m)}
		pom.TypeMeta = metav1.TypeMeta{APIVersion: out.asGV.String(), Kind: "PartialObjectMetadata"}
		return pom, nil
	}
	return s.toServed(sv, obj)
}

func objectMetaOf(m metav1.Object) *metav1.ObjectMeta {
	if om, ok := m.(*metav1.ObjectMeta); ok {
		return om.DeepCopy()
	}
	return &metav1.ObjectMeta{
		Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(), ResourceVersion: m.GetResourceVersion(),
		Generation: m.GetGeneration(), CreationTimestamp: m.GetCreationTimestamp(), DeletionTimestamp: m.GetDeletionTimestamp(),
		Labels: m.GetLabels(), Annotations: m.GetAnnotations(), OwnerReferences: m.GetOwnerReferences(),
		Finalizers: m.GetFinalizers(), ManagedFields: m.GetManagedFields(), GenerateName: m.GetGenerateName(),
	}
}

// table renders objects as a meta.k8s.io Table.
func (s *Server) table(sv *served, objs []runtime.Object, withColumns bool, gv schema.GroupVersion, lm metav1.ListMeta) (*metav1.Table, error) {
	t := &metav1.Table{ListMeta: lm}
	t.TypeMeta = metav1.TypeMeta{APIVersion: gv.String(), Kind: "Table"}
	tp := sv.k.table
	nowT := time.Now()
	if withColumns {
		if tp != nil {
			t.ColumnDefinitions = tp.columns
		} else {
			t.ColumnDefinitions = defaultTableColumns
		}
	}
	t.Rows = make([]metav1.TableRow, 0, len(objs))
	for _, obj := range objs {
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		var cells []interface{}
		if tp != nil {
			cells = tp.row(obj, nowT)
		} else {
			cells = []interface{}{m.GetName(), m.GetCreationTimestamp().UTC().Format(time.RFC3339)}
		}
		pom := &metav1.PartialObjectMetadata{ObjectMeta: *objectMetaOf(m)}
		pom.ManagedFields = nil
		pom.TypeMeta = metav1.TypeMeta{APIVersion: gv.String(), Kind: "PartialObjectMetadata"}
		t.Rows = append(t.Rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: pom}})
	}
	return t, nil
}
