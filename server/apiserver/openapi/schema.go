package openapi

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Schema is an OpenAPI schema object, the subset of it that Go types need,
// with the Kubernetes vendor extensions as fields. The same struct encodes
// both versions; the builder chooses v2 or v3 reference forms.
type Schema struct {
	Ref                  string             `json:"$ref,omitempty"`
	AllOf                []*Schema          `json:"allOf,omitempty"`
	OneOf                []*Schema          `json:"oneOf,omitempty"`
	Description          string             `json:"description,omitempty"`
	Type                 string             `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	UniqueItems          bool               `json:"uniqueItems,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	AdditionalProperties *Schema            `json:"additionalProperties,omitempty"`
	Required             []string           `json:"required,omitempty"`

	PatchMergeKey string `json:"x-kubernetes-patch-merge-key,omitempty"`
	PatchStrategy string `json:"x-kubernetes-patch-strategy,omitempty"`
	// GVK lists the kinds a top-level definition is served as.
	GVK []GVK `json:"x-kubernetes-group-version-kind,omitempty"`
}

// GVK is the value of x-kubernetes-group-version-kind.
type GVK struct {
	Group   string `json:"group"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
}

func toGVK(g schema.GroupVersionKind) GVK {
	return GVK{Group: g.Group, Version: g.Version, Kind: g.Kind}
}

// Interfaces apimachinery's types with custom JSON encodings implement to
// give their schema (resource.Quantity, intstr.IntOrString, metav1.Time...).
type (
	openAPISchemaTyper     interface{ OpenAPISchemaType() []string }
	openAPISchemaFormatter interface{ OpenAPISchemaFormat() string }
	openAPIV3OneOfTyper    interface{ OpenAPIV3OneOfTypes() []string }
	swaggerDocer           interface{ SwaggerDoc() map[string]string }
)

var (
	schemaTyperType   = reflect.TypeFor[openAPISchemaTyper]()
	swaggerDocerType  = reflect.TypeFor[swaggerDocer]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// builder turns Go types into definitions. One builder makes one document
// style: v2 refs (#/definitions/) or v3 refs (#/components/schemas/, with
// allOf around references that carry a description).
type builder struct {
	v3     bool
	names  map[reflect.Type]string
	byName map[string]reflect.Type
	defs   map[string]*Schema
}

func newBuilder(v3 bool) *builder {
	return &builder{
		v3:     v3,
		names:  map[reflect.Type]string{},
		byName: map[string]reflect.Type{},
		defs:   map[string]*Schema{},
	}
}

func (b *builder) refPrefix() string {
	if b.v3 {
		return "#/components/schemas/"
	}
	return "#/definitions/"
}

// DefinitionName is the upstream definition name of a named Go type: the
// package path with its domain reversed and slashes turned into dots, then
// the type name (k8s.io/api/core/v1.Pod is io.k8s.api.core.v1.Pod).
func DefinitionName(t reflect.Type) (string, error) {
	pkg, name := t.PkgPath(), t.Name()
	if pkg == "" || name == "" {
		return "", fmt.Errorf("type %v has no package path and name", t)
	}
	if strings.ContainsAny(name, "[]") {
		return "", fmt.Errorf("generic type %v is not supported", t)
	}
	parts := strings.Split(pkg, "/")
	domain := strings.Split(parts[0], ".")
	slices.Reverse(domain)
	parts[0] = strings.Join(domain, ".")
	return strings.Join(parts, ".") + "." + name, nil
}

// ref returns a reference to the definition of the named struct t, defining
// it first if needed.
func (b *builder) ref(t reflect.Type) (*Schema, error) {
	name, err := b.define(t)
	if err != nil {
		return nil, err
	}
	return &Schema{Ref: b.refPrefix() + name}, nil
}

// define makes the definition of the named struct t and returns its name.
func (b *builder) define(t reflect.Type) (string, error) {
	if name, ok := b.names[t]; ok {
		return name, nil
	}
	name, err := DefinitionName(t)
	if err != nil {
		return "", err
	}
	if other, ok := b.byName[name]; ok {
		return "", fmt.Errorf("types %v and %v both map to definition %s", other, t, name)
	}
	s := &Schema{}
	b.names[t], b.byName[name], b.defs[name] = name, t, s
	docs := swaggerDoc(t)
	s.Description = docs[""]
	pt := reflect.PointerTo(t)
	switch {
	case pt.Implements(schemaTyperType):
		v := reflect.New(t).Interface()
		types := v.(openAPISchemaTyper).OpenAPISchemaType()
		if len(types) != 1 {
			return "", fmt.Errorf("%v: OpenAPISchemaType gives %d types, want 1", t, len(types))
		}
		if f, ok := v.(openAPISchemaFormatter); ok {
			s.Format = f.OpenAPISchemaFormat()
		}
		if o, ok := v.(openAPIV3OneOfTyper); ok && b.v3 {
			for _, typ := range o.OpenAPIV3OneOfTypes() {
				s.OneOf = append(s.OneOf, &Schema{Type: typ})
			}
		} else {
			s.Type = types[0]
		}
	case pt.Implements(jsonMarshalerType):
		// A custom encoding without a declared schema (runtime.RawExtension,
		// metav1.FieldsV1): an arbitrary JSON object, as upstream.
		s.Type = "object"
	default:
		s.Type = "object"
		if err := b.structFields(t, s); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	return name, nil
}

func swaggerDoc(t reflect.Type) map[string]string {
	if reflect.PointerTo(t).Implements(swaggerDocerType) {
		return reflect.New(t).Interface().(swaggerDocer).SwaggerDoc()
	}
	return nil
}

// field is one JSON property of a struct, after inlining.
type field struct {
	name     string
	depth    int
	schema   *Schema
	required bool
}

// structFields fills s.Properties and s.Required from the exported fields
// of t, following encoding/json's rules for names, "-", omitempty and
// embedded structs (and Kubernetes' ",inline").
func (b *builder) structFields(t reflect.Type, s *Schema) error {
	fields := map[string]*field{}
	if err := b.collect(t, 0, swaggerDoc(t), fields); err != nil {
		return err
	}
	s.Properties = make(map[string]*Schema, len(fields))
	for name, f := range fields {
		s.Properties[name] = f.schema
		if f.required {
			s.Required = append(s.Required, name)
		}
	}
	slices.Sort(s.Required)
	return nil
}

func (b *builder) collect(t reflect.Type, depth int, docs map[string]string, out map[string]*field) error {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		optList := strings.Split(opts, ",")
		ft := sf.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if sf.Anonymous && ft.Kind() == reflect.Struct && (name == "" || slices.Contains(optList, "inline")) {
			// Embedded struct: its fields are promoted; the outer type's
			// descriptions win over the embedded type's own.
			inner := swaggerDoc(ft)
			merged := make(map[string]string, len(inner)+len(docs))
			for k, v := range inner {
				merged[k] = v
			}
			for k, v := range docs {
				if k != "" {
					merged[k] = v
				}
			}
			if err := b.collect(ft, depth+1, merged, out); err != nil {
				return err
			}
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if prev, ok := out[name]; ok && prev.depth <= depth {
			continue // shadowed by a shallower field, as encoding/json
		}
		fs, err := b.schemaFor(sf.Type)
		if err != nil {
			return fmt.Errorf("field %s: %w", sf.Name, err)
		}
		fs = b.decorate(fs, docs[name], sf.Tag.Get("patchMergeKey"), sf.Tag.Get("patchStrategy"))
		out[name] = &field{
			name:     name,
			depth:    depth,
			schema:   fs,
			required: !slices.Contains(optList, "omitempty") && !slices.Contains(optList, "omitzero"),
		}
	}
	return nil
}

// decorate adds a property's description and patch extensions. A reference
// cannot carry siblings in v3, so there it is wrapped in allOf, as upstream.
func (b *builder) decorate(s *Schema, desc, mergeKey, strategy string) *Schema {
	if desc == "" && mergeKey == "" && strategy == "" {
		return s
	}
	if s.Ref != "" {
		if b.v3 {
			s = &Schema{AllOf: []*Schema{s}}
		} else {
			s = &Schema{Ref: s.Ref}
		}
	}
	s.Description, s.PatchMergeKey, s.PatchStrategy = desc, mergeKey, strategy
	return s
}

// schemaFor returns the schema of a field of type t: a reference for named
// structs, an inline schema otherwise.
func (b *builder) schemaFor(t reflect.Type) (*Schema, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if t.Name() == "" {
			s := &Schema{Type: "object"}
			if err := b.structFields(t, s); err != nil {
				return nil, err
			}
			return s, nil
		}
		return b.ref(t)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			return &Schema{Type: "string", Format: "byte"}, nil
		}
		items, err := b.schemaFor(t.Elem())
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "array", Items: items}, nil
	case reflect.Map:
		k := t.Key()
		if k.Kind() != reflect.String && !k.Implements(textMarshalerType) {
			return nil, fmt.Errorf("map key type %v cannot be a JSON object key", k)
		}
		v, err := b.schemaFor(t.Elem())
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "object", AdditionalProperties: v}, nil
	case reflect.Interface:
		return &Schema{}, nil // any JSON value
	case reflect.String:
		return &Schema{Type: "string"}, nil
	case reflect.Bool:
		return &Schema{Type: "boolean"}, nil
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16:
		return &Schema{Type: "integer", Format: "int32"}, nil
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return &Schema{Type: "integer", Format: "int64"}, nil
	case reflect.Float32:
		return &Schema{Type: "number", Format: "float"}, nil
	case reflect.Float64:
		return &Schema{Type: "number", Format: "double"}, nil
	default:
		return nil, fmt.Errorf("type %v has no JSON form", t)
	}
}

// addGVK records that the definition of t is served as gvk.
func (b *builder) addGVK(t reflect.Type, gvk schema.GroupVersionKind) error {
	name, err := b.define(t)
	if err != nil {
		return err
	}
	s := b.defs[name]
	g := toGVK(gvk)
	if !slices.Contains(s.GVK, g) {
		s.GVK = append(s.GVK, g)
		slices.SortFunc(s.GVK, func(a, b GVK) int {
			return strings.Compare(a.Group+"/"+a.Version+"/"+a.Kind, b.Group+"/"+b.Version+"/"+b.Kind)
		})
	}
	return nil
}

// refs calls fn with the definition name of every reference in s.
func refs(s *Schema, prefix string, fn func(string)) {
	if s == nil {
		return
	}
	if s.Ref != "" {
		fn(strings.TrimPrefix(s.Ref, prefix))
	}
	for _, c := range s.AllOf {
		refs(c, prefix, fn)
	}
	for _, c := range s.OneOf {
		refs(c, prefix, fn)
	}
	refs(s.Items, prefix, fn)
	refs(s.AdditionalProperties, prefix, fn)
	for _, c := range s.Properties {
		refs(c, prefix, fn)
	}
}
