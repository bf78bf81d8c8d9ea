// Package apiserver serves the Kubernetes REST API over orch's store:
// discovery, CRUD, list and watch, the four patch types, subresources,
// tables, defaulting, validation and the admission steps orch needs. Types,
// serializers, selectors and patch logic come from k8s.io/apimachinery and
// k8s.io/api; the HTTP layer, registry and storage are orch's own.
package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/version"

	"github.com/orch-dev/orch/server/apiserver/internal/ssaschema"
	"github.com/orch-dev/orch/server/apiserver/openapi"
	"github.com/orch-dev/orch/store"
)

// MaxBodyBytes is the largest request body accepted, as upstream's 3 MiB.
const MaxBodyBytes = 3 << 20

// Config is what the API server needs to know about the cluster.
type Config struct {
	// ServiceCIDR is where Service cluster IPs come from.
	ServiceCIDR netip.Prefix
	// NodePortMin and NodePortMax bound NodePort allocation.
	NodePortMin, NodePortMax int
	// Version is reported at /version.
	Version version.Info
	// OpenAPI serves /openapi/v2 and /openapi/v3 (nil: documents generated
	// from the served types).
	OpenAPI http.Handler
	// Extra handles paths the API server does not know (nil: 404).
	Extra http.Handler
	// NotReadyTolerationSeconds and UnreachableTolerationSeconds are the
	// tolerationSeconds of the default NoExecute tolerations pods get (300
	// when zero).
	NotReadyTolerationSeconds, UnreachableTolerationSeconds int64
	// Ready reports readiness beyond the API server's own (nil: always).
	Ready func() error
	// BookmarkInterval is how often watches that asked for bookmarks get
	// one (a minute when zero, as kube-apiserver).
	BookmarkInterval time.Duration
}

// User is an authenticated caller.
type User struct {
	Name   string
	Groups []string
}

// Authenticator identifies the caller of a request.
type Authenticator interface {
	// Authenticate returns the user, or ok=false when the request carries
	// no credentials it recognises.
	Authenticate(r *http.Request) (u *User, ok bool, err error)
}

type userKey struct{}

// WithUser marks ctx as coming from an already-authenticated user (the
// in-process clients of the server's own components).
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the request's user.
func UserFrom(ctx context.Context) (*User, bool) {
	u, ok := ctx.Value(userKey{}).(*User)
	return u, ok
}

// Server is the API server's HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	auth     Authenticator
	scheme   *runtime.Scheme
	codecs   serializer.CodecFactory
	reg      *registry
	objs     *objects
	st       store.Store
	typeConv managedfields.TypeConverter
	created  *createFields
	// decoders are the JSON and YAML request body decoders, indexed by
	// bodyDecoder.
	decoders [4]runtime.Decoder
	// clientWrites counts the clients' write requests in flight.
	clientWrites atomic.Int64
	alloc        *allocator
	started      time.Time

	// nsLife caches namespace lifecycle by revision (name -> nsLifecycle).
	nsLife sync.Map
	// bufs are reused response buffers (*bytes.Buffer).
	bufs sync.Pool

	fmMu          sync.Mutex
	fieldManagers map[string]*managedfields.FieldManager
	discovery     *discoveryDocs
	nodes         NodeConnector
}

// New builds the API server over st. enc encrypts Secrets at rest (nil: not
// encrypted); auth identifies callers (nil: every request is anonymous).
func New(cfg Config, st store.Store, enc Transformer, auth Authenticator, log *slog.Logger) (*Server, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	if cfg.NodePortMin == 0 {
		cfg.NodePortMin, cfg.NodePortMax = 30000, 32767
	}
	s := &Server{
		cfg:           cfg,
		log:           log,
		auth:          auth,
		scheme:        scheme,
		codecs:        newCodecs(scheme),
		reg:           newRegistry(),
		st:            st,
		started:       time.Now(),
		fieldManagers: map[string]*managedfields.FieldManager{},
	}
	s.objs = newObjects(st, scheme, enc)
	ssa, err := ssaschema.Parser()
	if err != nil {
		return nil, err
	}
	s.typeConv = newPlanTypeConverter(managedfields.NewSchemeTypeConverter(scheme, ssa))
	s.created = newCreateFields(s.typeConv)
	for i := range s.decoders {
		s.decoders[i] = jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme, scheme,
			jsonserializer.SerializerOptions{Yaml: i&1 != 0, Strict: i&2 != 0})
	}
	s.alloc = newAllocator(st, cfg.ServiceCIDR, cfg.NodePortMin, cfg.NodePortMax)
	s.discovery = newDiscovery(s.reg)
	if s.cfg.OpenAPI == nil {
		oa, err := openapi.NewHandler(s.openAPIResources(), openapi.Info{Title: "Kubernetes", Version: cfg.Version.GitVersion}, log)
		if err != nil {
			return nil, fmt.Errorf("openapi: %w", err)
		}
		s.cfg.OpenAPI = oa
	}
	return s, nil
}

// Scheme is the scheme of the types the server serves.
func (s *Server) Scheme() *runtime.Scheme { return s.scheme }

// fieldManager returns the managed-fields tracker of a kind and subresource.
func (s *Server) fieldManager(k *kind, subresource string) (*managedfields.FieldManager, error) {
	key := k.gvk.String() + "/" + subresource
	s.fmMu.Lock()
	defer s.fmMu.Unlock()
	if fm, ok := s.fieldManagers[key]; ok {
		return fm, nil
	}
	fm, err := managedfields.NewDefaultFieldManager(s.typeConv, s.scheme, s.scheme, s.scheme, k.gvk, k.gvk.GroupVersion(), subresource, nil)
	if err != nil {
		return nil, fmt.Errorf("field manager for %s: %w", k.gvk, err)
	}
	s.fieldManagers[key] = fm
	return fm, nil
}

// CacheBytes is how many bytes the server's cache of encoded objects holds
// (the JSON of objects read recently, bounded by DefaultJSONCacheBytes).
func (s *Server) CacheBytes() uint64 { return uint64(s.objs.json.bytes()) }

// ClientWrites is the number of write requests (create, update, patch,
// delete) from clients outside the process being served now; the server's
// own components (authenticated in-process) do not count. The scheduler
// slows its background reports while clients write in numbers.
func (s *Server) ClientWrites() int64 { return s.clientWrites.Load() }

// isClientWrite says whether r writes objects: a POST, PUT, PATCH or DELETE
// of the API other than the streaming subresources (exec, attach,
// portforward and proxy stay open as long as a user likes).
func isClientWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return false
	}
	p := r.URL.Path
	if !strings.HasPrefix(p, "/api/") && !strings.HasPrefix(p, "/apis/") {
		return false
	}
	switch p[strings.LastIndexByte(p, '/')+1:] {
	case "exec", "attach", "portforward", "proxy":
		return false
	}
	return !strings.Contains(p, "/proxy/")
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch path {
	case "/healthz", "/livez":
		writeText(w, http.StatusOK, "ok")
		return
	case "/readyz":
		if s.cfg.Ready != nil {
			if err := s.cfg.Ready(); err != nil {
				writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		writeText(w, http.StatusOK, "ok")
		return
	case "/version", "/version/":
		s.writeJSON(w, http.StatusOK, s.cfg.Version)
		return
	}
	if strings.HasPrefix(path, "/healthz/") || strings.HasPrefix(path, "/livez/") || strings.HasPrefix(path, "/readyz/") {
		writeText(w, http.StatusOK, "ok")
		return
	}
	if _, ok := UserFrom(r.Context()); !ok {
		u, ok, err := s.authenticate(r)
		if err != nil || !ok {
			s.writeError(w, r, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		r = r.WithContext(WithUser(r.Context(), u))
		if isClientWrite(r) {
			s.clientWrites.Add(1)
			defer s.clientWrites.Add(-1)
		}
	}
	switch {
	case path == "/api" || path == "/api/" || path == "/apis" || path == "/apis/":
		s.serveDiscoveryRoot(w, r)
		return
	case strings.HasPrefix(path, "/openapi/"):
		if s.cfg.OpenAPI != nil {
			s.cfg.OpenAPI.ServeHTTP(w, r)
			return
		}
	case strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/apis/"):
		s.serveAPI(w, r)
		return
	}
	if s.cfg.Extra != nil {
		s.cfg.Extra.ServeHTTP(w, r)
		return
	}
	s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{}, path))
}

func (s *Server) authenticate(r *http.Request) (*User, bool, error) {
	if s.auth == nil {
		return nil, false, nil
	}
	return s.auth.Authenticate(r)
}

// requestInfo is what a resource URL names.
type requestInfo struct {
	gv          schema.GroupVersion
	resource    string
	namespace   string
	name        string
	subresource string
	watchPath   bool // the deprecated /watch/ prefix
}

// parsePath splits /api/v1/... and /apis/<group>/<version>/... URLs.
func parsePath(path string) (requestInfo, []string, bool) {
	var ri requestInfo
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch parts[0] {
	case "api":
		if len(parts) < 2 {
			return ri, nil, false
		}
		ri.gv = schema.GroupVersion{Version: parts[1]}
		parts = parts[2:]
	case "apis":
		if len(parts) < 3 {
			return ri, parts, false
		}
		ri.gv = schema.GroupVersion{Group: parts[1], Version: parts[2]}
		parts = parts[3:]
	default:
		return ri, nil, false
	}
	if len(parts) > 0 && parts[0] == "watch" {
		ri.watchPath = true
		parts = parts[1:]
	}
	if len(parts) == 0 {
		return ri, nil, true
	}
	if parts[0] == "namespaces" && len(parts) >= 3 && !(len(parts) == 3 && (parts[2] == "status" || parts[2] == "finalize")) {
		ri.namespace = parts[1]
		parts = parts[2:]
	}
	ri.resource = parts[0]
	if len(parts) > 1 {
		ri.name = parts[1]
	}
	if len(parts) > 2 {
		ri.subresource = parts[2]
	}
	if len(parts) > 3 && ri.subresource != "proxy" {
		return ri, nil, false
	}
	return ri, parts, true
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	ri, _, ok := parsePath(r.URL.Path)
	if !ok {
		if g, isGroup := groupPath(r.URL.Path); isGroup {
			s.serveGroup(w, r, g)
			return
		}
		s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	if ri.resource == "" {
		s.serveResourceList(w, r, ri.gv)
		return
	}
	sv := s.reg.lookup(ri.gv, ri.resource)
	if sv == nil {
		s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{Group: ri.gv.Group, Resource: ri.resource}, ri.name))
		return
	}
	if !sv.k.namespaced && ri.namespace != "" {
		s.writeError(w, r, apierrors.NewNotFound(sv.k.gr, ri.name))
		return
	}
	if ri.namespace == "" && sv.k.namespaced && ri.name != "" {
		s.writeError(w, r, apierrors.NewBadRequest("the server could not find the requested resource: a namespace is required"))
		return
	}
	q := query(r)
	isWatch := ri.watchPath || q.Get("watch") == "true" || q.Get("watch") == "1"
	if u, _ := UserFrom(r.Context()); u != nil {
		if err := s.authorize(r.Context(), u, verbOf(r, ri, isWatch), sv, ri); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	switch ri.subresource {
	case "":
	case "status":
		if !sv.k.hasStatus {
			s.writeError(w, r, apierrors.NewNotFound(sv.k.gr, ri.name))
			return
		}
	case "scale":
		if !sv.k.scale {
			s.writeError(w, r, apierrors.NewNotFound(sv.k.gr, ri.name))
			return
		}
		s.serveScale(w, r, sv, ri)
		return
	default:
		if !contains(sv.k.subresources, ri.subresource) {
			s.writeError(w, r, apierrors.NewNotFound(sv.k.gr, ri.name))
			return
		}
		s.serveSubresource(w, r, sv, ri)
		return
	}
	switch r.Method {
	case http.MethodGet:
		switch {
		case isWatch:
			s.serveWatch(w, r, sv, ri)
		case ri.name == "":
			s.serveList(w, r, sv, ri)
		default:
			s.serveGet(w, r, sv, ri)
		}
	case http.MethodPost:
		if ri.name != "" {
			s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, "create"))
			return
		}
		s.serveCreate(w, r, sv, ri)
	case http.MethodPut:
		s.serveUpdate(w, r, sv, ri)
	case http.MethodPatch:
		s.servePatch(w, r, sv, ri)
	case http.MethodDelete:
		if ri.name == "" {
			s.serveDeleteCollection(w, r, sv, ri)
		} else {
			s.serveDelete(w, r, sv, ri)
		}
	default:
		s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, r.Method))
	}
}

func groupPath(p string) (string, bool) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 2 && parts[0] == "apis" {
		return parts[1], true
	}
	return "", false
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}

// now is the server clock, in whole seconds as Kubernetes timestamps are.
func now() metav1.Time { return metav1.NewTime(time.Now().Truncate(time.Second)) }

// unsupportedMediaType is the 415 error for a body type the server does not read.
func unsupportedMediaType(ct string) error {
	return apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "", schema.GroupResource{}, "",
		fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got %q)", ct), 0, false)
}

// query is r's query, parsed. A request without one (most creates and
// updates) gets a nil map, which reads as empty, instead of a new empty map
// for each of the several places that look at the query.
func query(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}
