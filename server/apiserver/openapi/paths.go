package openapi

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Media types of request and response bodies.
const (
	mediaJSON            = "application/json"
	mediaYAML            = "application/yaml"
	mediaProtobuf        = "application/vnd.kubernetes.protobuf"
	mediaJSONWatch       = "application/json;stream=watch"
	mediaProtobufWatch   = "application/vnd.kubernetes.protobuf;stream=watch"
	mediaJSONPatch       = "application/json-patch+json"
	mediaMergePatch      = "application/merge-patch+json"
	mediaStrategicMerge  = "application/strategic-merge-patch+json"
	mediaApplyPatch      = "application/apply-patch+yaml"
	mediaText            = "text/plain"
	mediaAny             = "*/*"
	bearerTokenScheme    = "BearerToken"
	groupVersionKindExt  = "x-kubernetes-group-version-kind"
	descNamespaceParam   = "object name and auth scope, such as for teams and projects"
	descPrettyParam      = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget)."
	descWatchDeprecation = "deprecated: use the 'watch' parameter with a list operation instead"
)

// param is a path or query parameter.
type param struct {
	Name        string
	In          string // "path" or "query"
	Description string
	Type        string // string, boolean, integer
	UniqueItems bool
	Required    bool
}

// response is one status code of an operation.
type response struct {
	Code        string
	Description string
	Body        reflect.Type // nil: no body
	Text        bool         // a text body (type: string)
}

// operation is one method on a path, in a version-neutral form that v2
// and v3 render differently.
type operation struct {
	Method      string // get, put, post, patch, delete
	ID          string
	Description string
	Action      string
	GVK         schema.GroupVersionKind
	Params      []param
	Body        reflect.Type // request body; nil: none
	Consumes    []string
	Produces    []string
	Responses   []response
	Tag         string
}

// pathItem is one URL path with its operations.
type pathItem struct {
	Path   string
	GV     schema.GroupVersion
	Params []param
	Ops    []operation
}

// groupVersionName is the upstream camel-case group-version of operation
// ids: "" v1 is CoreV1, apps/v1 AppsV1, rbac.authorization.k8s.io/v1
// RbacAuthorizationV1.
func groupVersionName(gv schema.GroupVersion) string {
	return groupName(gv.Group) + upperFirst(gv.Version)
}

func groupName(group string) string {
	if group == "" {
		return "Core"
	}
	var sb strings.Builder
	for _, p := range strings.Split(strings.TrimSuffix(group, ".k8s.io"), ".") {
		for _, q := range strings.Split(p, "-") {
			sb.WriteString(upperFirst(q))
		}
	}
	return sb.String()
}

// tagName is the upstream operation tag: core_v1, apps_v1, rbacAuthorization_v1.
func tagName(gv schema.GroupVersion) string {
	g := groupName(gv.Group)
	return string(unicode.ToLower(rune(g[0]))) + g[1:] + "_" + gv.Version
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// prefix is the URL path of a group-version: /api/v1 or /apis/<group>/<version>.
func prefix(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "/api/" + gv.Version
	}
	return "/apis/" + gv.Group + "/" + gv.Version
}

// docPath is the key of a group-version's v3 document: api/v1, apis/apps/v1.
func docPath(gv schema.GroupVersion) string { return strings.TrimPrefix(prefix(gv), "/") }

// optionParams makes query parameters from the exported scalar fields of an
// options struct (metav1.ListOptions, corev1.PodLogOptions...), described by
// its SwaggerDoc, as upstream derives them.
func optionParams(t reflect.Type) ([]param, error) {
	docs := swaggerDoc(t)
	var out []param
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous || !sf.IsExported() {
			continue // TypeMeta: kind and apiVersion are not parameters
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		p := param{Name: name, In: "query", Description: docs[name]}
		ft := sf.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.String:
			p.Type = "string"
		case reflect.Bool:
			p.Type = "boolean"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			p.Type = "integer"
		case reflect.Slice:
			if ft.Elem().Kind() != reflect.String {
				continue
			}
			p.Type, p.UniqueItems = "string", true
		default:
			continue // structs (preconditions, sinceTime) are not query parameters
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("options type %v has no scalar fields", t)
	}
	slices.SortFunc(out, func(a, b param) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// optionSets are the query parameters of the standard verbs.
type optionSets struct {
	list, create, update, patch, del []param
}

func newOptionSets() (*optionSets, error) {
	var o optionSets
	for _, x := range []struct {
		dst *[]param
		t   reflect.Type
	}{
		{&o.list, reflect.TypeFor[metav1.ListOptions]()},
		{&o.create, reflect.TypeFor[metav1.CreateOptions]()},
		{&o.update, reflect.TypeFor[metav1.UpdateOptions]()},
		{&o.patch, reflect.TypeFor[metav1.PatchOptions]()},
		{&o.del, reflect.TypeFor[metav1.DeleteOptions]()},
	} {
		p, err := optionParams(x.t)
		if err != nil {
			return nil, err
		}
		*x.dst = p
	}
	return &o, nil
}

// without drops the named parameters.
func without(ps []param, names ...string) []param {
	return slices.DeleteFunc(slices.Clone(ps), func(p param) bool { return slices.Contains(names, p.Name) })
}

// merged is the union of parameter lists, sorted by name.
func merged(lists ...[]param) []param {
	var out []param
	for _, l := range lists {
		for _, p := range l {
			if !slices.ContainsFunc(out, func(q param) bool { return q.Name == p.Name }) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b param) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func hasVerb(verbs []string, v string) bool { return slices.Contains(verbs, v) }

// paths returns the path items of all resources, sorted by path.
func paths(resources []Resource) ([]pathItem, error) {
	opts, err := newOptionSets()
	if err != nil {
		return nil, err
	}
	var out []pathItem
	for i := range resources {
		items, err := resourcePaths(&resources[i], opts)
		if err != nil {
			return nil, fmt.Errorf("resource %s %s: %w", resources[i].GVK.GroupVersion(), resources[i].Plural, err)
		}
		out = append(out, items...)
	}
	slices.SortFunc(out, func(a, b pathItem) int { return strings.Compare(a.Path, b.Path) })
	for i := range out {
		if i > 0 && out[i].Path == out[i-1].Path {
			return nil, fmt.Errorf("path %s is served twice", out[i].Path)
		}
		methods := map[string]bool{}
		for _, o := range out[i].Ops {
			if methods[o.Method] {
				return nil, fmt.Errorf("path %s: two %s operations (verbs that map to the same method)", out[i].Path, strings.ToUpper(o.Method))
			}
			methods[o.Method] = true
		}
	}
	return out, nil
}

func resourcePaths(r *Resource, opts *optionSets) ([]pathItem, error) {
	gv := r.GVK.GroupVersion()
	kind := r.GVK.Kind
	gvName := groupVersionName(gv)
	tag := tagName(gv)
	obj := typeOf(r.Object)
	status := reflect.TypeFor[metav1.Status]()
	deleteOpts := reflect.TypeFor[metav1.DeleteOptions]()
	patchBody := reflect.TypeFor[metav1.Patch]()
	watchEvent := reflect.TypeFor[metav1.WatchEvent]()
	var list reflect.Type
	if r.List != nil {
		list = typeOf(r.List)
	}

	ns, nsPath := "", ""
	var nsParams []param
	if r.Namespaced {
		ns, nsPath = "Namespaced", "/namespaces/{namespace}"
		nsParams = []param{{Name: "namespace", In: "path", Description: descNamespaceParam, Type: "string", Required: true}}
	}
	pretty := param{Name: "pretty", In: "query", Description: descPrettyParam, Type: "string", UniqueItems: true}
	nameParam := param{Name: "name", In: "path", Description: "name of the " + kind, Type: "string", Required: true, UniqueItems: true}
	collParams := merged(nsParams, []param{pretty})
	itemParams := merged(nsParams, []param{pretty, nameParam})

	base := prefix(gv)
	get := []string{mediaJSON, mediaYAML, mediaProtobuf}
	listProduces := append(slices.Clone(get), mediaJSONWatch, mediaProtobufWatch)
	unauthorized := response{Code: "401", Description: "Unauthorized"}
	ok := func(t reflect.Type) response { return response{Code: "200", Description: "OK", Body: t} }
	created := func(t reflect.Type) response { return response{Code: "201", Description: "Created", Body: t} }
	accepted := func(t reflect.Type) response { return response{Code: "202", Description: "Accepted", Body: t} }
	op := func(method, id, desc, action string, gvk schema.GroupVersionKind) operation {
		return operation{Method: method, ID: id, Description: desc, Action: action, GVK: gvk, Tag: tag, Consumes: []string{mediaAny}, Produces: get}
	}
	patchConsumes := []string{mediaJSONPatch, mediaMergePatch, mediaStrategicMerge, mediaApplyPatch}
	listParams := opts.list

	var items []pathItem
	coll := pathItem{Path: base + nsPath + "/" + r.Plural, GV: gv, Params: collParams}
	if hasVerb(r.Verbs, VerbList) {
		o := op("get", "list"+gvName+ns+kind, "list or watch objects of kind "+kind, "list", r.GVK)
		o.Params, o.Produces, o.Responses = listParams, listProduces, []response{ok(list), unauthorized}
		coll.Ops = append(coll.Ops, o)
		if r.Namespaced {
			all := pathItem{Path: base + "/" + r.Plural, GV: gv, Params: []param{pretty}}
			o := o
			o.ID = "list" + gvName + kind + "ForAllNamespaces"
			all.Ops = append(all.Ops, o)
			items = append(items, all)
		}
	}
	if hasVerb(r.Verbs, VerbCreate) {
		o := op("post", "create"+gvName+ns+kind, "create "+article(kind)+" "+kind, "post", r.GVK)
		o.Body, o.Params = obj, opts.create
		o.Responses = []response{ok(obj), created(obj), accepted(obj), unauthorized}
		coll.Ops = append(coll.Ops, o)
	}
	if hasVerb(r.Verbs, VerbDeleteCollection) {
		o := op("delete", "delete"+gvName+"Collection"+ns+kind, "delete collection of "+kind, "deletecollection", r.GVK)
		o.Body, o.Params = deleteOpts, merged(opts.del, without(opts.list, "watch", "allowWatchBookmarks"))
		o.Responses = []response{ok(status), unauthorized}
		coll.Ops = append(coll.Ops, o)
	}
	if len(coll.Ops) > 0 {
		items = append(items, coll)
	}

	item := pathItem{Path: coll.Path + "/{name}", GV: gv, Params: itemParams}
	if hasVerb(r.Verbs, VerbGet) {
		o := op("get", "read"+gvName+ns+kind, "read the specified "+kind, "get", r.GVK)
		o.Responses = []response{ok(obj), unauthorized}
		item.Ops = append(item.Ops, o)
	}
	if hasVerb(r.Verbs, VerbUpdate) {
		o := op("put", "replace"+gvName+ns+kind, "replace the specified "+kind, "put", r.GVK)
		o.Body, o.Params = obj, opts.update
		o.Responses = []response{ok(obj), created(obj), unauthorized}
		item.Ops = append(item.Ops, o)
	}
	if hasVerb(r.Verbs, VerbPatch) {
		o := op("patch", "patch"+gvName+ns+kind, "partially update the specified "+kind, "patch", r.GVK)
		o.Body, o.Params, o.Consumes = patchBody, opts.patch, patchConsumes
		o.Responses = []response{ok(obj), created(obj), unauthorized}
		item.Ops = append(item.Ops, o)
	}
	if hasVerb(r.Verbs, VerbDelete) {
		o := op("delete", "delete"+gvName+ns+kind, "delete "+article(kind)+" "+kind, "delete", r.GVK)
		o.Body, o.Params = deleteOpts, opts.del
		o.Responses = []response{ok(status), accepted(status), unauthorized}
		item.Ops = append(item.Ops, o)
	}
	if len(item.Ops) > 0 {
		items = append(items, item)
	}

	if hasVerb(r.Verbs, VerbWatch) {
		watchParams := merged(listParams, []param{pretty})
		w := func(path, id, desc, action string, extra []param) pathItem {
			o := op("get", id, desc, action, r.GVK)
			o.Produces = listProduces
			o.Responses = []response{ok(watchEvent), unauthorized}
			return pathItem{Path: path, GV: gv, Params: merged(watchParams, extra), Ops: []operation{o}}
		}
		items = append(items,
			w(base+"/watch"+nsPath+"/"+r.Plural, "watch"+gvName+ns+kind+"List",
				"watch individual changes to a list of "+kind+". "+descWatchDeprecation+".", "watchlist", nsParams),
			w(base+"/watch"+nsPath+"/"+r.Plural+"/{name}", "watch"+gvName+ns+kind,
				"watch changes to an object of kind "+kind+". "+descWatchDeprecation+", filtered to a single item with the 'fieldSelector' parameter.",
				"watch", merged(nsParams, []param{nameParam})))
		if r.Namespaced {
			items = append(items, w(base+"/watch/"+r.Plural, "watch"+gvName+kind+"ListForAllNamespaces",
				"watch individual changes to a list of "+kind+". "+descWatchDeprecation+".", "watchlist", nil))
		}
	}

	for _, s := range r.Subresources {
		it, err := subresourcePath(r, s, item.Path, itemParams, opts, op, patchConsumes)
		if err != nil {
			return nil, fmt.Errorf("subresource %s: %w", s.Name, err)
		}
		items = append(items, it)
	}
	return items, nil
}

type opMaker func(method, id, desc, action string, gvk schema.GroupVersionKind) operation

func subresourcePath(r *Resource, s Subresource, itemPath string, itemParams []param, opts *optionSets, op opMaker, patchConsumes []string) (pathItem, error) {
	gv := r.GVK.GroupVersion()
	kind := r.GVK.Kind
	ns := ""
	if r.Namespaced {
		ns = "Namespaced"
	}
	suffix := ns + kind + groupName(s.Name) // "binding" -> Binding, "finalize" -> Finalize
	gvName := groupVersionName(gv)
	gvk := s.GVK
	if gvk.Kind == "" {
		gvk = r.GVK
	}
	body := typeOf(r.Object)
	if s.Object != nil {
		body = typeOf(s.Object)
	} else if s.Text {
		body = nil
	}
	var extra []param
	if s.Options != nil {
		p, err := optionParams(typeOf(s.Options))
		if err != nil {
			return pathItem{}, err
		}
		extra = p
	}
	okResp := response{Code: "200", Description: "OK", Body: body, Text: s.Text}
	unauthorized := response{Code: "401", Description: "Unauthorized"}
	item := pathItem{Path: itemPath + "/" + s.Name, GV: gv, Params: itemParams}
	what := s.Name + " of the specified " + kind
	for _, v := range s.Verbs {
		switch v {
		case VerbGet:
			o := op("get", "read"+gvName+suffix, "read "+what, "get", gvk)
			o.Params = extra
			o.Responses = []response{okResp, unauthorized}
			if s.Text {
				o.Produces = []string{mediaText, mediaJSON, mediaYAML, mediaProtobuf}
			}
			item.Ops = append(item.Ops, o)
		case VerbUpdate:
			if body == nil {
				return pathItem{}, fmt.Errorf("verb update needs a body Object")
			}
			o := op("put", "replace"+gvName+suffix, "replace "+what, "put", gvk)
			o.Body, o.Params = body, merged(opts.update, extra)
			o.Responses = []response{okResp, {Code: "201", Description: "Created", Body: body}, unauthorized}
			item.Ops = append(item.Ops, o)
		case VerbPatch:
			if body == nil {
				return pathItem{}, fmt.Errorf("verb patch needs a body Object")
			}
			o := op("patch", "patch"+gvName+suffix, "partially update "+what, "patch", gvk)
			o.Body, o.Params, o.Consumes = reflect.TypeFor[metav1.Patch](), merged(opts.patch, extra), patchConsumes
			o.Responses = []response{okResp, {Code: "201", Description: "Created", Body: body}, unauthorized}
			item.Ops = append(item.Ops, o)
		case VerbCreate:
			if body == nil {
				return pathItem{}, fmt.Errorf("verb create needs a body Object")
			}
			o := op("post", "create"+gvName+suffix, "create "+s.Name+" of "+article(kind)+" "+kind, "post", gvk)
			o.Body, o.Params = body, merged(opts.create, extra)
			o.Responses = []response{okResp, {Code: "201", Description: "Created", Body: body}, {Code: "202", Description: "Accepted", Body: body}, unauthorized}
			item.Ops = append(item.Ops, o)
		case VerbConnect:
			for _, m := range []string{"get", "post"} {
				o := op(m, "connect"+gvName+upperFirst(m)+suffix, "connect "+strings.ToUpper(m)+" requests to "+s.Name+" of "+kind, "connect", gvk)
				o.Params, o.Produces = extra, []string{mediaAny}
				o.Responses = []response{{Code: "200", Description: "OK", Text: true}, unauthorized}
				item.Ops = append(item.Ops, o)
			}
		}
	}
	return item, nil
}

// article is "an" before a vowel, as upstream's "create an Eviction".
func article(kind string) string {
	if kind != "" && strings.ContainsRune("AEIOU", rune(kind[0])) {
		return "an"
	}
	return "a"
}
