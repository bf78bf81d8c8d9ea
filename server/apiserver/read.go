package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/orch-dev/orch/store"
)

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	out, err := s.negotiate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.plainJSON(r, sv, out) {
		kv, err := s.st.Get(r.Context(), sv.k.key(ri.namespace, ri.name))
		if err != nil {
			s.writeError(w, r, storeError(sv.k, ri.name, err))
			return
		}
		item, err := s.storedJSON(r.Context(), sv.k, kv, nil)
		if err != nil {
			s.writeError(w, r, apierrors.NewInternalError(err))
			return
		}
		s.writeJSONBytes(w, http.StatusOK, append(withTypeMeta(make([]byte, 0, len(item)+64), sv.gvk(), item), '\n'))
		return
	}
	obj, err := s.objs.get(r.Context(), sv.k, ri.namespace, ri.name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := s.renderOne(sv, out, obj, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObjectAs(w, r, out, http.StatusOK, body)
}

// plainJSON says whether a response is the storage version's plain JSON,
// which the JSON cache serves.
func (s *Server) plainJSON(r *http.Request, sv *served, out output) bool {
	return out.as == "" && out.info.MediaType == runtime.ContentTypeJSON && !sv.legacy && query(r).Get("pretty") == ""
}

// writeJSONBytes writes an encoded JSON response.
func (s *Server) writeJSONBytes(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", runtime.ContentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// filter is a request's label and field selectors.
type filter struct {
	labels labels.Selector
	fields fields.Selector
}

func parseFilter(r *http.Request) (filter, error) {
	q := query(r)
	f := filter{labels: labels.Everything(), fields: fields.Everything()}
	if ls := q.Get("labelSelector"); ls != "" {
		sel, err := labels.Parse(ls)
		if err != nil {
			return f, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
		}
		f.labels = sel
	}
	if fs := q.Get("fieldSelector"); fs != "" {
		sel, err := fields.ParseSelector(fs)
		if err != nil {
			return f, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
		}
		f.fields = sel
	}
	return f, nil
}

func (f filter) empty() bool { return f.labels.Empty() && f.fields.Empty() }

func (f filter) matches(k *kind, obj runtime.Object) bool {
	if f.empty() {
		return true
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return false
	}
	if !f.labels.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	if f.fields.Empty() {
		return true
	}
	return f.fields.Matches(k.objectFields(obj, m))
}

// requestFilter parses a request's selectors and checks the field
// selector against what the kind indexes.
func requestFilter(r *http.Request, k *kind) (filter, error) {
	f, err := parseFilter(r)
	if err == nil {
		err = checkFieldSelector(k, f)
	}
	return f, err
}

// checkFieldSelector refuses field selectors on fields the kind does not
// index, as upstream does.
func checkFieldSelector(k *kind, f filter) error {
	if f.fields.Empty() {
		return nil
	}
	set := k.objectFields(k.newObj(), &metav1.ObjectMeta{})
	for _, req := range f.fields.Requirements() {
		if _, ok := set[req.Field]; !ok {
			return apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
		}
	}
	return nil
}

type continueToken struct {
	V     string `json:"v"`
	RV    int64  `json:"rv"`
	Start string `json:"start"`
}

func encodeContinue(rv int64, start string) string {
	b, _ := json.Marshal(continueToken{V: "meta.k8s.io/v1", RV: rv, Start: start})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.V != "meta.k8s.io/v1" || t.RV <= 0 {
		return t, apierrors.NewBadRequest("continue key is not valid")
	}
	return t, nil
}

// listResult is one page of matching objects.
type listResult struct {
	// items are the decoded objects (nil in a lazy list); kvs their stored
	// form, in the same order.
	items     []runtime.Object
	kvs       []store.KeyValue
	rv        int64
	cont      string
	remaining *int64
	// cached holds, by key, the JSON cache's encoding of the kvs the store
	// left without their value (a lazy list's cache hits).
	cached map[string][]byte
}

// list reads the objects of a kind in a namespace that match f, honouring
// limit, continue and resourceVersion as upstream. A lazy list without
// selectors decodes nothing: only kvs are filled.
func (s *Server) list(ctx context.Context, k *kind, ns string, f filter, q map[string][]string, lazy bool) (*listResult, error) {
	get := func(key string) string {
		if v := q[key]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var limit int64
	if l := get("limit"); l != "" {
		v, err := strconv.ParseInt(l, 10, 64)
		if err != nil || v < 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid limit %q", l))
		}
		limit = v
	}
	opts := store.ListOptions{}
	if c := get("continue"); c != "" {
		t, err := decodeContinue(c)
		if err != nil {
			return nil, err
		}
		opts.Revision, opts.Continue = t.RV, t.Start
	} else if rvs := get("resourceVersion"); rvs != "" && rvs != "0" {
		rv, err := parseRV(rvs)
		if err != nil {
			return nil, err
		}
		if get("resourceVersionMatch") == string(metav1.ResourceVersionMatchExact) {
			opts.Revision = rv
		} else if cur := s.awaitRevision(ctx, rv); rv > cur {
			return nil, apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rv, cur), 1)
		}
	}
	res := &listResult{}
	prefix := k.prefix(ns)
	if lazy && f.empty() && !k.encrypt {
		// Items the JSON cache holds at their revision are written from it:
		// the store need not copy their values.
		res.cached = map[string][]byte{}
		opts.Known = func(key string, rev int64) bool {
			if b := s.objs.json.get(key, rev); b != nil {
				res.cached[key] = b
				return true
			}
			return false
		}
	}
	for {
		page := opts
		if limit > 0 {
			page.Limit = limit - int64(len(res.kvs))
			if !f.empty() && page.Limit < 100 {
				page.Limit = 100
			}
		}
		lr, err := s.st.List(ctx, prefix, page)
		if err != nil {
			if apierrors.IsResourceExpired(storeError(k, "", err)) && opts.Continue != "" {
				return nil, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
			}
			return nil, storeError(k, "", err)
		}
		res.rv = lr.Revision
		opts.Revision = lr.Revision
		var decoded []runtime.Object
		if !lazy || !f.empty() {
			if decoded, err = s.objs.decodeAll(ctx, k, lr.KVs); err != nil {
				return nil, apierrors.NewInternalError(err)
			}
		}
		for i, kv := range lr.KVs {
			if decoded != nil {
				obj := decoded[i]
				if !f.matches(k, obj) {
					continue
				}
				res.items = append(res.items, obj)
			}
			res.kvs = append(res.kvs, kv)
			if limit > 0 && int64(len(res.kvs)) >= limit {
				if i < len(lr.KVs)-1 || lr.Continue != "" {
					res.cont = encodeContinue(lr.Revision, kv.Key)
					if f.empty() && lr.Remaining >= 0 {
						rem := lr.Remaining + int64(len(lr.KVs)-1-i)
						res.remaining = &rem
					}
				}
				return res, nil
			}
		}
		if lr.Continue == "" {
			return res, nil
		}
		opts.Continue = lr.Continue
	}
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	out, err := s.negotiate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := requestFilter(r, sv.k)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	jsonItems := s.plainJSON(r, sv, out)
	res, err := s.list(r.Context(), sv.k, ri.namespace, f, query(r), jsonItems)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	lm := metav1.ListMeta{ResourceVersion: strconv.FormatInt(res.rv, 10), Continue: res.cont, RemainingItemCount: res.remaining}
	switch out.as {
	case "Table":
		t, err := s.table(sv, res.items, true, out.asGV, lm)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.writeObjectAs(w, r, out, http.StatusOK, t)
		return
	case "PartialObjectMetadataList", "PartialObjectMetadata":
		l := &metav1.PartialObjectMetadataList{ListMeta: lm}
		l.TypeMeta = metav1.TypeMeta{APIVersion: out.asGV.String(), Kind: "PartialObjectMetadataList"}
		for _, obj := range res.items {
			m, _ := meta.Accessor(obj)
			l.Items = append(l.Items, metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: out.asGV.String(), Kind: "PartialObjectMetadata"},
				ObjectMeta: *objectMetaOf(m)})
		}
		s.writeObjectAs(w, r, out, http.StatusOK, l)
		return
	}
	if jsonItems {
		s.writeJSONList(w, r, sv, res, lm)
		return
	}
	list, err := s.newServedList(sv, res.items)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	lma, _ := meta.ListAccessor(list)
	lma.SetResourceVersion(lm.ResourceVersion)
	lma.SetContinue(lm.Continue)
	lma.SetRemainingItemCount(lm.RemainingItemCount)
	s.writeObjectAs(w, r, out, http.StatusOK, list)
}

// newServedList builds the list object of the served version.
func (s *Server) newServedList(sv *served, items []runtime.Object) (runtime.Object, error) {
	gvk := sv.gv.WithKind(sv.kindName() + "List")
	list, err := s.scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	served := items
	if sv.legacy {
		served = make([]runtime.Object, len(items))
		for i, it := range items {
			if served[i], err = s.toServed(sv, it); err != nil {
				return nil, err
			}
		}
	}
	for _, it := range served {
		it.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	}
	if err := meta.SetList(list, served); err != nil {
		return nil, err
	}
	list.GetObjectKind().SetGroupVersionKind(gvk)
	return list, nil
}

// serveWatch streams changes as watch events, with bookmarks and the
// watch-list protocol (sendInitialEvents) client-go informers use.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	out, err := s.negotiate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if out.info.StreamSerializer == nil {
		s.writeError(w, r, apierrors.NewBadRequest("no streaming support for "+out.info.MediaType))
		return
	}
	f, err := requestFilter(r, sv.k)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if ri.name != "" {
		f.fields = fields.AndSelectors(f.fields, fields.OneTermEqualSelector("metadata.name", ri.name))
	}
	q := query(r)
	ctx := r.Context()
	timeout := 30 * time.Minute
	if ts := q.Get("timeoutSeconds"); ts != "" {
		if v, err := strconv.Atoi(ts); err == nil && v > 0 {
			timeout = time.Duration(v) * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	sendInitial := q.Get("sendInitialEvents") == "true"
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	rvs := q.Get("resourceVersion")
	if sendInitial && q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) {
		s.writeError(w, r, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "ListOptions"}, "",
			field.ErrorList{field.Forbidden(field.NewPath("resourceVersionMatch"), "sendInitialEvents requires resourceVersionMatch=NotOlderThan")}))
		return
	}
	var initial *listResult
	var from int64
	if rvs == "" || rvs == "0" || sendInitial {
		res, err := s.list(ctx, sv.k, ri.namespace, f, nil, false)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		initial, from = res, res.rv
	} else {
		if from, err = parseRV(rvs); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	s.awaitRevision(ctx, from)
	wt, err := s.st.Watch(ctx, sv.k.prefix(ri.namespace), from)
	if err != nil {
		s.writeError(w, r, storeError(sv.k, "", err))
		return
	}
	defer wt.Stop()

	flusher, _ := w.(http.Flusher)
	enc := &eventEncoder{
		framer:   out.info.StreamSerializer.Framer.NewFrameWriter(w),
		envelope: s.codecs.EncoderForVersion(out.info.StreamSerializer.Serializer, schema.GroupVersion{Version: "v1"}),
		embedded: out.info.Serializer,
	}
	w.Header().Set("Content-Type", out.info.MediaType)
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	first := true
	cached := s.plainJSON(r, sv, out)
	// send writes an event; kv is the stored form of obj when the cache
	// may serve it (nil for deletions).
	send := func(typ watch.EventType, obj runtime.Object, kv *store.KeyValue) error {
		var raw []byte
		if cached && kv != nil {
			item, err := s.storedJSON(ctx, sv.k, *kv, obj)
			if err != nil {
				return err
			}
			raw = enc.cachedObject(sv.gvk(), item)
		} else {
			body, err := s.renderOne(sv, out, obj, first)
			if err != nil {
				return err
			}
			if out.as == "Table" {
				first = false
			}
			if raw, err = enc.encodeObject(body); err != nil {
				return err
			}
		}
		if err := enc.write(string(typ), raw); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	bookmark := func(rv int64, initialEnd bool) error {
		obj := sv.k.newObj()
		m, _ := meta.Accessor(obj)
		m.SetResourceVersion(strconv.FormatInt(rv, 10))
		if initialEnd {
			m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		}
		var body runtime.Object
		var err error
		if out.as == "PartialObjectMetadata" || out.as == "PartialObjectMetadataList" {
			// Metadata watches (the garbage collector's informers) get
			// their bookmarks as metadata too: their decoder knows no
			// other kind.
			body, err = s.renderOne(sv, out, obj, false)
		} else {
			body, err = s.toServed(sv, obj)
			if err == nil {
				body.GetObjectKind().SetGroupVersionKind(sv.gvk())
			}
		}
		if err != nil {
			return err
		}
		raw, err := enc.encodeObject(body)
		if err != nil {
			return err
		}
		err = enc.write(string(watch.Bookmark), raw)
		if flusher != nil {
			flusher.Flush()
		}
		return err
	}
	if initial != nil {
		for i, obj := range initial.items {
			if err := send(watch.Added, obj, &initial.kvs[i]); err != nil {
				return
			}
		}
	}
	if sendInitial {
		if err := bookmark(from, true); err != nil {
			return
		}
	}
	last := from
	every := s.cfg.BookmarkInterval
	if every <= 0 {
		every = time.Minute
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if bookmarks {
				if err := bookmark(last, false); err != nil {
					return
				}
			}
		case ev, ok := <-wt.Events():
			if !ok {
				if err := wt.Err(); err != nil && ctx.Err() == nil {
					st := storeError(sv.k, "", err).(apierrors.APIStatus).Status()
					st.Kind, st.APIVersion = "Status", "v1"
					if raw, err := enc.encodeObject(&st); err == nil {
						_ = enc.write(string(watch.Error), raw)
					}
				}
				return
			}
			last = ev.Revision()
			typ, obj, err := s.watchEvent(ctx, sv.k, f, ev)
			if err != nil {
				s.log.Warn("watch decode", "key", ev.KV.Key, "err", err)
				continue
			}
			if obj == nil {
				continue
			}
			var kv *store.KeyValue
			if ev.Type != store.EventDelete {
				kv = &ev.KV
			}
			if err := send(typ, obj, kv); err != nil {
				return
			}
		}
	}
}

// watchEvent turns a store change into the watch event a client with
// filter f sees: objects entering the selector are ADDED, leaving it DELETED.
func (s *Server) watchEvent(ctx context.Context, k *kind, f filter, ev store.Event) (watch.EventType, runtime.Object, error) {
	switch ev.Type {
	case store.EventCreate:
		obj, err := s.objs.decode(ctx, k, ev.KV)
		if err != nil || !f.matches(k, obj) {
			return "", nil, err
		}
		return watch.Added, obj, nil
	case store.EventDelete:
		obj, err := s.objs.decode(ctx, k, ev.KV)
		if err != nil || !f.matches(k, obj) {
			return "", nil, err
		}
		return watch.Deleted, obj, nil
	}
	obj, err := s.objs.decode(ctx, k, ev.KV)
	if err != nil {
		return "", nil, err
	}
	now := f.matches(k, obj)
	if f.empty() || ev.Prev == nil {
		if !now {
			return "", nil, nil
		}
		return watch.Modified, obj, nil
	}
	prev, err := s.objs.decode(ctx, k, *ev.Prev)
	if err != nil {
		return "", nil, err
	}
	before := f.matches(k, prev)
	switch {
	case now && before:
		return watch.Modified, obj, nil
	case now:
		return watch.Added, obj, nil
	case before:
		return watch.Deleted, obj, nil
	}
	return "", nil, nil
}

// bytesBuffer is a minimal io.Writer collecting bytes.
type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) {
	b.b = append(b.b, p...)
	return len(p), nil
}

// writeJSONList writes a list as JSON: the same bytes the JSON serializer
// writes for the list object, its items from the JSON cache or encoded in
// parallel.
func (s *Server) writeJSONList(w http.ResponseWriter, r *http.Request, sv *served, res *listResult, lm metav1.ListMeta) {
	enc := make([][]byte, len(res.kvs))
	err := parallel(len(res.kvs), func(i int) error {
		if b, ok := res.cached[res.kvs[i].Key]; ok && res.kvs[i].Value == nil {
			enc[i] = b
			return nil
		}
		var obj runtime.Object
		if res.items != nil {
			obj = res.items[i]
		}
		b, err := s.storedJSON(r.Context(), sv.k, res.kvs[i], obj)
		enc[i] = b
		return err
	})
	if err != nil {
		s.writeError(w, r, apierrors.NewInternalError(err))
		return
	}
	metaJSON, err := json.Marshal(&lm)
	if err != nil {
		s.writeError(w, r, apierrors.NewInternalError(err))
		return
	}
	gvk := sv.gv.WithKind(sv.kindName() + "List")
	head := make([]byte, 0, 128+len(metaJSON))
	head = append(head, `{"kind":"`...)
	head = append(head, gvk.Kind...)
	head = append(head, `","apiVersion":"`...)
	head = append(head, gvk.GroupVersion().String()...)
	head = append(head, `","metadata":`...)
	head = append(head, metaJSON...)
	head = append(head, `,"items":[`...)
	const tail = "]}\n"
	size := len(head) + len(tail)
	for i, b := range enc {
		if i > 0 {
			size++
		}
		size += len(b)
	}
	w.Header().Set("Content-Type", runtime.ContentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	// Written in chunks of about 64 KB: no second copy of the whole list.
	buf := head
	for i, b := range enc {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
		if len(buf) >= 64<<10 {
			if _, err := w.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
	}
	buf = append(buf, tail...)
	_, _ = w.Write(buf)
}

// storedJSON returns the JSON (list item form) of the object stored as kv,
// decoded already as obj or, when obj is nil, decoded here on a cache miss.
// Encrypted kinds are not cached.
func (s *Server) storedJSON(ctx context.Context, k *kind, kv store.KeyValue, obj runtime.Object) ([]byte, error) {
	c := s.objs.json
	if k.encrypt {
		c = nil
	}
	if b := c.get(kv.Key, kv.ModRevision); b != nil {
		return b, nil
	}
	if obj == nil {
		var err error
		if obj, err = s.objs.decode(ctx, k, kv); err != nil {
			return nil, err
		}
	}
	b, err := itemJSON(obj)
	if err != nil {
		return nil, err
	}
	c.put(kv.Key, kv.ModRevision, b)
	return b, nil
}

// revisionWait bounds how long a request naming a revision the store has
// not announced yet waits for it (kube-apiserver waits up to 3 s for its
// watch cache). A client can hold such a revision legitimately: a commit is
// visible to reads a moment before the store announces its revision.
const revisionWait = 3 * time.Second

// awaitRevision waits until the store's revision reaches rv, ctx ends or
// revisionWait passes, and returns the store's revision.
func (s *Server) awaitRevision(ctx context.Context, rv int64) int64 {
	cur := s.st.Revision()
	if rv <= cur {
		return cur
	}
	deadline := time.Now().Add(revisionWait)
	for wait := 100 * time.Microsecond; rv > cur && time.Now().Before(deadline); wait = min(2*wait, 20*time.Millisecond) {
		select {
		case <-ctx.Done():
			return cur
		case <-time.After(wait):
		}
		cur = s.st.Revision()
	}
	return cur
}
