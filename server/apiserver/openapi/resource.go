package openapi

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Verbs of a resource, as in API discovery.
const (
	VerbGet              = "get"
	VerbList             = "list"
	VerbWatch            = "watch"
	VerbCreate           = "create"
	VerbUpdate           = "update"
	VerbPatch            = "patch"
	VerbDelete           = "delete"
	VerbDeleteCollection = "deletecollection"
	// VerbConnect is a subresource verb: GET and POST upgrade requests
	// (exec, attach, portforward).
	VerbConnect = "connect"
)

// Resource is one served group-version-resource.
type Resource struct {
	// GVK is the served group, version and kind (e.g. apps/v1 Deployment).
	GVK schema.GroupVersionKind
	// Plural is the resource name in URLs (e.g. "deployments").
	Plural string
	// Namespaced resources live under /namespaces/{namespace}/.
	Namespaced bool
	// Verbs the resource supports: get, list, watch, create, update, patch,
	// delete, deletecollection.
	Verbs []string
	// Subresources served below /{name}/.
	Subresources []Subresource
	// Object is a prototype of the kind, e.g. &corev1.Pod{}.
	Object runtime.Object
	// List is a prototype of the list kind, e.g. &corev1.PodList{}; needed
	// when Verbs has list, watch or deletecollection. Its GVK is the
	// resource's group-version with the Go type's name as kind.
	List runtime.Object
}

// Subresource is a subresource of a Resource, e.g. pods/status.
type Subresource struct {
	// Name in the URL: "status", "scale", "binding", "eviction", "log", "exec".
	Name string
	// Verbs: get, update, patch, create; connect for upgrade requests.
	Verbs []string
	// GVK is the kind of Object, and the kind named by the operations'
	// x-kubernetes-group-version-kind (e.g. autoscaling/v1 Scale,
	// policy/v1 Eviction, v1 PodExecOptions). Zero: the parent's.
	GVK schema.GroupVersionKind
	// Object is the request and response body, e.g. &autoscalingv1.Scale{};
	// nil means the parent's Object (status), or none when Text is set.
	Object runtime.Object
	// Options' exported scalar fields become query parameters, e.g.
	// &corev1.PodLogOptions{}. Optional.
	Options runtime.Object
	// Text: the responses are text streams rather than objects (log, exec).
	Text bool
}

// Info is the info section of the documents.
type Info struct {
	// Title, "Kubernetes" upstream.
	Title string
	// Version of the API server, e.g. "v1.37.2".
	Version string
}

var pluralRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validate checks the resource list and returns an error naming the first
// bad entry.
func validate(resources []Resource) error {
	seen := map[string]bool{}
	for i := range resources {
		r := &resources[i]
		what := fmt.Sprintf("resource %d (%s %s)", i, r.GVK.GroupVersion(), r.Plural)
		if r.GVK.Version == "" || r.GVK.Kind == "" {
			return fmt.Errorf("%s: GVK needs a version and a kind", what)
		}
		if !pluralRE.MatchString(r.Plural) {
			return fmt.Errorf("%s: plural %q is not a lowercase DNS label", what, r.Plural)
		}
		key := r.GVK.GroupVersion().String() + "/" + r.Plural
		if seen[key] {
			return fmt.Errorf("%s: listed twice", what)
		}
		seen[key] = true
		if err := checkObject(r.Object); err != nil {
			return fmt.Errorf("%s: Object: %w", what, err)
		}
		for _, v := range r.Verbs {
			switch v {
			case VerbGet, VerbCreate, VerbUpdate, VerbPatch, VerbDelete:
			case VerbList, VerbWatch, VerbDeleteCollection:
				if err := checkObject(r.List); err != nil {
					return fmt.Errorf("%s: verb %s needs List: %w", what, v, err)
				}
			default:
				return fmt.Errorf("%s: unknown verb %q", what, v)
			}
		}
		subs := map[string]bool{}
		for _, s := range r.Subresources {
			if !pluralRE.MatchString(s.Name) {
				return fmt.Errorf("%s: subresource name %q is not a lowercase DNS label", what, s.Name)
			}
			if subs[s.Name] {
				return fmt.Errorf("%s: subresource %q listed twice", what, s.Name)
			}
			subs[s.Name] = true
			if len(s.Verbs) == 0 {
				return fmt.Errorf("%s: subresource %q has no verbs", what, s.Name)
			}
			for _, v := range s.Verbs {
				if !slices.Contains([]string{VerbGet, VerbCreate, VerbUpdate, VerbPatch, VerbConnect}, v) {
					return fmt.Errorf("%s: subresource %q: unknown verb %q", what, s.Name, v)
				}
			}
			if s.Object != nil {
				if err := checkObject(s.Object); err != nil {
					return fmt.Errorf("%s: subresource %q: Object: %w", what, s.Name, err)
				}
				if s.GVK.Kind == "" {
					return fmt.Errorf("%s: subresource %q: Object given without its GVK", what, s.Name)
				}
			}
			if s.Options != nil {
				if err := checkObject(s.Options); err != nil {
					return fmt.Errorf("%s: subresource %q: Options: %w", what, s.Name, err)
				}
			}
		}
	}
	return nil
}

func checkObject(o runtime.Object) error {
	if o == nil {
		return fmt.Errorf("missing prototype")
	}
	t := reflect.TypeOf(o)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || t.Elem().Name() == "" {
		return fmt.Errorf("prototype %T is not a pointer to a named struct", o)
	}
	return nil
}

// typeOf returns the struct type a prototype points to.
func typeOf(o runtime.Object) reflect.Type { return reflect.TypeOf(o).Elem() }

// listGVK is the GVK of a resource's list kind.
func (r *Resource) listGVK() schema.GroupVersionKind {
	return r.GVK.GroupVersion().WithKind(typeOf(r.List).Name())
}
