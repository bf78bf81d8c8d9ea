package openapi

import (
	"crypto/sha512"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Content types of the protobuf encodings, as client-go asks for them.
const (
	ContentTypeV2Protobuf = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
	ContentTypeV3Protobuf = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf"
	// Older clients spell the version with a dot.
	contentTypeV2ProtobufDot = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
	contentTypeV3ProtobufDot = "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"
)

// Handler serves /openapi/v2, /openapi/v3 and /openapi/v3/<group-version>.
// The documents are built on the first request that needs them and then
// kept, gzip-compressed; the JSON and protobuf encodings separately, since
// most clients only ever ask for one of them.
type Handler struct {
	resources []Resource
	info      Info
	log       *slog.Logger

	v2     lazy[*blob]
	v2pb   lazy[*blob]
	v3     lazy[*v3Blobs]
	v3pbMu sync.Mutex
	v3pb   map[string]*lazy[*blob]
}

// v3Blobs are the v3 documents as the handler keeps them.
type v3Blobs struct {
	index *blob
	docs  map[string]*blob
}

// lazy is a value computed once on first use.
type lazy[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lazy[T]) get(f func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = f() })
	return l.v, l.err
}

// NewHandler checks the resource list and returns a Handler for it. The
// resources must not be changed afterwards.
func NewHandler(resources []Resource, info Info, log *slog.Logger) (*Handler, error) {
	if err := validate(resources); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	return &Handler{
		resources: slices.Clone(resources),
		info:      info,
		log:       log,
		v3pb:      map[string]*lazy[*blob]{},
	}, nil
}

func (h *Handler) getV2() (*blob, error) {
	return h.v2.get(func() (*blob, error) {
		start := time.Now()
		b, err := BuildV2(h.resources, h.info)
		if err != nil {
			return nil, err
		}
		bl, err := newBlob(b, etag(b))
		if err != nil {
			return nil, err
		}
		h.log.Info("built OpenAPI v2 document", "bytes", len(b), "gzipBytes", len(bl.gz), "duration", time.Since(start))
		return bl, nil
	})
}

func (h *Handler) getV2Protobuf() (*blob, error) {
	return h.v2pb.get(func() (*blob, error) {
		j, err := h.getV2()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		raw, err := j.raw()
		if err != nil {
			return nil, err
		}
		b, err := V2Protobuf(raw)
		if err != nil {
			return nil, err
		}
		bl, err := newBlob(b, etag(b))
		if err != nil {
			return nil, err
		}
		h.log.Info("built OpenAPI v2 protobuf document", "bytes", len(b), "gzipBytes", len(bl.gz), "duration", time.Since(start))
		return bl, nil
	})
}

func (h *Handler) getV3() (*v3Blobs, error) {
	return h.v3.get(func() (*v3Blobs, error) {
		start := time.Now()
		v, err := BuildV3(h.resources, h.info)
		if err != nil {
			return nil, err
		}
		out := &v3Blobs{docs: make(map[string]*blob, len(v.Docs))}
		if out.index, err = newBlob(v.Index, etag(v.Index)); err != nil {
			return nil, err
		}
		total, gz := 0, 0
		for path, d := range v.Docs {
			if out.docs[path], err = newBlob(d.JSON, d.Hash); err != nil {
				return nil, err
			}
			total += len(d.JSON)
			gz += len(out.docs[path].gz)
		}
		h.log.Info("built OpenAPI v3 documents", "documents", len(v.Docs), "bytes", total, "gzipBytes", gz, "duration", time.Since(start))
		return out, nil
	})
}

func (h *Handler) getV3Protobuf(path string, doc *blob) (*blob, error) {
	h.v3pbMu.Lock()
	l, ok := h.v3pb[path]
	if !ok {
		l = &lazy[*blob]{}
		h.v3pb[path] = l
	}
	h.v3pbMu.Unlock()
	return l.get(func() (*blob, error) {
		raw, err := doc.raw()
		if err != nil {
			return nil, err
		}
		b, err := V3Protobuf(raw)
		if err != nil {
			return nil, err
		}
		// Same ETag as the JSON form, as upstream; Vary: Accept keeps
		// caches from mixing them.
		return newBlob(b, doc.etag)
	})
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch p := strings.TrimSuffix(r.URL.Path, "/"); {
	case p == "/openapi/v2":
		h.serveV2(w, r)
	case p == "/openapi/v3":
		h.serveV3Index(w, r)
	case strings.HasPrefix(p, "/openapi/v3/"):
		h.serveV3Doc(w, r, strings.TrimPrefix(p, "/openapi/v3/"))
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	h.log.Error("cannot build OpenAPI document", "document", what, "err", err)
	http.Error(w, "cannot build OpenAPI document: "+err.Error(), http.StatusInternalServerError)
}

func (h *Handler) send(w http.ResponseWriter, r *http.Request, b *blob, ctype string) {
	if err := b.serve(w, r, ctype); err != nil {
		h.log.Debug("writing OpenAPI document", "path", r.URL.Path, "err", err)
	}
}

func (h *Handler) serveV2(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Vary", "Accept")
	switch negotiate(r.Header.Get("Accept"), mediaJSON, ContentTypeV2Protobuf, contentTypeV2ProtobufDot) {
	case mediaJSON:
		b, err := h.getV2()
		if err != nil {
			h.fail(w, "v2", err)
			return
		}
		h.send(w, r, b, mediaJSON)
	case ContentTypeV2Protobuf, contentTypeV2ProtobufDot:
		b, err := h.getV2Protobuf()
		if err != nil {
			h.fail(w, "v2 protobuf", err)
			return
		}
		h.send(w, r, b, contentTypeV2ProtobufDot)
	default:
		http.Error(w, "supported types: application/json, "+ContentTypeV2Protobuf, http.StatusNotAcceptable)
	}
}

func (h *Handler) serveV3Index(w http.ResponseWriter, r *http.Request) {
	v, err := h.getV3()
	if err != nil {
		h.fail(w, "v3", err)
		return
	}
	h.send(w, r, v.index, mediaJSON)
}

func (h *Handler) serveV3Doc(w http.ResponseWriter, r *http.Request, path string) {
	v, err := h.getV3()
	if err != nil {
		h.fail(w, "v3", err)
		return
	}
	doc, ok := v.docs[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Add("Vary", "Accept")
	ctype := negotiate(r.Header.Get("Accept"), mediaJSON, ContentTypeV3Protobuf, contentTypeV3ProtobufDot)
	switch ctype {
	case mediaJSON:
	case ContentTypeV3Protobuf, contentTypeV3ProtobufDot:
		if doc, err = h.getV3Protobuf(path, doc); err != nil {
			h.fail(w, "v3 protobuf "+path, err)
			return
		}
		ctype = contentTypeV3ProtobufDot
	default:
		http.Error(w, "supported types: application/json, "+ContentTypeV3Protobuf, http.StatusNotAcceptable)
		return
	}
	if hash := r.URL.Query().Get("hash"); hash != "" {
		if hash != doc.etag {
			// An old URL: send the client to the current document.
			http.Redirect(w, r, "/openapi/v3/"+path+"?hash="+doc.etag, http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", time.Now().AddDate(1, 0, 0).UTC().Format(http.TimeFormat))
	}
	h.send(w, r, doc, ctype)
}

func etag(b []byte) string { return fmt.Sprintf("%X", sha512.Sum512(b)) }

// negotiate picks the offer the Accept header prefers, honouring q-values
// (the first offer on a tie); an empty header accepts anything. It returns
// "" when nothing is acceptable.
func negotiate(accept string, offers ...string) string {
	if strings.TrimSpace(accept) == "" {
		return offers[0]
	}
	best, bestQ := "", 0.0
	for _, clause := range strings.Split(accept, ",") {
		// Not mime.ParseMediaType: the protobuf types contain "@", which
		// RFC 2045 does not allow in a token.
		mt, params, _ := strings.Cut(clause, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		q, ok := qValue(params)
		if !ok || q <= bestQ {
			continue
		}
		for _, o := range offers {
			if matches(mt, o) {
				best, bestQ = o, q
				break
			}
		}
	}
	return best
}

func matches(pattern, mediaType string) bool {
	if pattern == "*/*" || pattern == mediaType {
		return true
	}
	typ, _, _ := strings.Cut(mediaType, "/")
	return strings.HasSuffix(pattern, "/*") && strings.TrimSuffix(pattern, "/*") == typ
}
