package openapi

import (
	"bytes"
	"crypto/sha512"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
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
// kept: JSON and protobuf encodings separately, since most clients only
// ever ask for one of them.
type Handler struct {
	resources []Resource
	info      Info
	log       *slog.Logger
	started   time.Time

	v2     lazy[[]byte]
	v2pb   lazy[[]byte]
	v3     lazy[*V3]
	v3pbMu sync.Mutex
	v3pb   map[string]*lazy[[]byte]
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
		started:   time.Now(),
		v3pb:      map[string]*lazy[[]byte]{},
	}, nil
}

// V2 returns the v2 JSON document, building it on first use.
func (h *Handler) V2() ([]byte, error) {
	return h.v2.get(func() ([]byte, error) {
		start := time.Now()
		b, err := BuildV2(h.resources, h.info)
		if err == nil {
			h.log.Info("built OpenAPI v2 document", "bytes", len(b), "duration", time.Since(start))
		}
		return b, err
	})
}

// V2Protobuf returns the v2 document in gnostic protobuf, building it on
// first use.
func (h *Handler) V2Protobuf() ([]byte, error) {
	return h.v2pb.get(func() ([]byte, error) {
		j, err := h.V2()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		b, err := V2Protobuf(j)
		if err == nil {
			h.log.Info("built OpenAPI v2 protobuf document", "bytes", len(b), "duration", time.Since(start))
		}
		return b, err
	})
}

// V3 returns the v3 documents, building them on first use.
func (h *Handler) V3() (*V3, error) {
	return h.v3.get(func() (*V3, error) {
		start := time.Now()
		v, err := BuildV3(h.resources, h.info)
		if err == nil {
			total := 0
			for _, d := range v.Docs {
				total += len(d.JSON)
			}
			h.log.Info("built OpenAPI v3 documents", "documents", len(v.Docs), "bytes", total, "duration", time.Since(start))
		}
		return v, err
	})
}

func (h *Handler) v3Protobuf(path string, doc *V3Document) ([]byte, error) {
	h.v3pbMu.Lock()
	l, ok := h.v3pb[path]
	if !ok {
		l = &lazy[[]byte]{}
		h.v3pb[path] = l
	}
	h.v3pbMu.Unlock()
	return l.get(func() ([]byte, error) { return V3Protobuf(doc.JSON) })
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

func (h *Handler) serveV2(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Vary", "Accept")
	switch negotiate(r.Header.Get("Accept"), mediaJSON, ContentTypeV2Protobuf, contentTypeV2ProtobufDot) {
	case mediaJSON:
		b, err := h.V2()
		if err != nil {
			h.fail(w, "v2", err)
			return
		}
		h.serve(w, r, mediaJSON, b, etag(b))
	case ContentTypeV2Protobuf, contentTypeV2ProtobufDot:
		b, err := h.V2Protobuf()
		if err != nil {
			h.fail(w, "v2 protobuf", err)
			return
		}
		h.serve(w, r, contentTypeV2ProtobufDot, b, etag(b))
	default:
		http.Error(w, "supported types: application/json, "+ContentTypeV2Protobuf, http.StatusNotAcceptable)
	}
}

func (h *Handler) serveV3Index(w http.ResponseWriter, r *http.Request) {
	v, err := h.V3()
	if err != nil {
		h.fail(w, "v3", err)
		return
	}
	h.serve(w, r, mediaJSON, v.Index, etag(v.Index))
}

func (h *Handler) serveV3Doc(w http.ResponseWriter, r *http.Request, path string) {
	v, err := h.V3()
	if err != nil {
		h.fail(w, "v3", err)
		return
	}
	doc, ok := v.Docs[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Add("Vary", "Accept")
	var body []byte
	ctype := negotiate(r.Header.Get("Accept"), mediaJSON, ContentTypeV3Protobuf, contentTypeV3ProtobufDot)
	switch ctype {
	case mediaJSON:
		body = doc.JSON
	case ContentTypeV3Protobuf, contentTypeV3ProtobufDot:
		if body, err = h.v3Protobuf(path, doc); err != nil {
			h.fail(w, "v3 protobuf "+path, err)
			return
		}
		ctype = contentTypeV3ProtobufDot
	default:
		http.Error(w, "supported types: application/json, "+ContentTypeV3Protobuf, http.StatusNotAcceptable)
		return
	}
	if hash := r.URL.Query().Get("hash"); hash != "" {
		if hash != doc.Hash {
			// An old URL: send the client to the current document.
			http.Redirect(w, r, "/openapi/v3/"+path+"?hash="+doc.Hash, http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", time.Now().AddDate(1, 0, 0).UTC().Format(http.TimeFormat))
	}
	// The ETag is the document's hash for both encodings, as upstream; Vary
	// keeps caches from mixing them.
	h.serve(w, r, ctype, body, doc.Hash)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, ctype string, body []byte, tag string) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("ETag", strconv.Quote(tag))
	http.ServeContent(w, r, "", h.started, bytes.NewReader(body))
}

func etag(b []byte) string { return fmt.Sprintf("%X", sha512.Sum512(b)) }

// negotiate picks the first of offers the Accept header allows, honouring
// q-values; an empty header accepts anything. It returns "" when nothing
// is acceptable.
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
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(p, "=")
			if strings.TrimSpace(k) != "q" {
				continue
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				f = 0
			}
			q = f
		}
		if q <= bestQ {
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
