package openapi

import (
	"crypto/sha512"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// V3 is the set of OpenAPI v3 documents: one per group-version, and the
// index that lists them.
type V3 struct {
	// Index is the discovery document served at /openapi/v3:
	// {"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=..."}}}.
	Index []byte
	// Docs maps a document path ("api/v1", "apis/apps/v1") to its document.
	Docs map[string]*V3Document
}

// V3Document is one group-version's OpenAPI v3 document.
type V3Document struct {
	// JSON is the encoded document.
	JSON []byte
	// Hash is the uppercase hex SHA-512 of JSON, as upstream's ETag and the
	// hash parameter of the index's URLs.
	Hash string
}

type v3Document struct {
	OpenAPI    string                 `json:"openapi"`
	Info       infoObject             `json:"info"`
	Paths      map[string]*v3PathItem `json:"paths"`
	Components v3Components           `json:"components"`
	Security   []map[string][]string  `json:"security"`
}

type v3Components struct {
	Schemas         map[string]*Schema        `json:"schemas"`
	SecuritySchemes map[string]securityScheme `json:"securitySchemes"`
}

type v3PathItem struct {
	Get        *v3Operation  `json:"get,omitempty"`
	Put        *v3Operation  `json:"put,omitempty"`
	Post       *v3Operation  `json:"post,omitempty"`
	Delete     *v3Operation  `json:"delete,omitempty"`
	Patch      *v3Operation  `json:"patch,omitempty"`
	Parameters []v3Parameter `json:"parameters,omitempty"`
}

type v3Operation struct {
	Tags        []string              `json:"tags"`
	Description string                `json:"description"`
	OperationID string                `json:"operationId"`
	Parameters  []v3Parameter         `json:"parameters,omitempty"`
	RequestBody *v3RequestBody        `json:"requestBody,omitempty"`
	Responses   map[string]v3Response `json:"responses"`
	Action      string                `json:"x-kubernetes-action"`
	GVK         *GVK                  `json:"x-kubernetes-group-version-kind"`
}

type v3Parameter struct {
	Name        string  `json:"name"`
	In          string  `json:"in"`
	Description string  `json:"description,omitempty"`
	Required    bool    `json:"required,omitempty"`
	Schema      *Schema `json:"schema"`
}

type v3RequestBody struct {
	Content  map[string]v3Media `json:"content"`
	Required bool               `json:"required,omitempty"`
}

type v3Media struct {
	Schema *Schema `json:"schema"`
}

type v3Response struct {
	Description string             `json:"description"`
	Content     map[string]v3Media `json:"content,omitempty"`
}

type v3IndexEntry struct {
	ServerRelativeURL string `json:"serverRelativeURL"`
}

func v3Params(ps []param) []v3Parameter {
	out := make([]v3Parameter, 0, len(ps))
	for _, p := range ps {
		out = append(out, v3Parameter{Name: p.Name, In: p.In, Description: p.Description, Required: p.Required,
			Schema: &Schema{Type: p.Type, UniqueItems: p.UniqueItems}})
	}
	return out
}

func content(types []string, s *Schema) map[string]v3Media {
	m := make(map[string]v3Media, len(types))
	for _, t := range types {
		m[t] = v3Media{Schema: s}
	}
	return m
}

// BuildV3 returns the OpenAPI v3 documents of the resources, one per
// group-version with the schemas its paths reach, and their index.
func BuildV3(resources []Resource, info Info) (*V3, error) {
	if err := validate(resources); err != nil {
		return nil, err
	}
	items, err := paths(resources)
	if err != nil {
		return nil, err
	}
	b, err := definitions(resources, items, true)
	if err != nil {
		return nil, err
	}
	byGV := map[schema.GroupVersion][]pathItem{}
	for _, it := range items {
		byGV[it.GV] = append(byGV[it.GV], it)
	}
	out := &V3{Docs: make(map[string]*V3Document, len(byGV))}
	index := map[string]v3IndexEntry{}
	for gv, its := range byGV {
		doc, err := v3GroupVersion(b, its, info)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", gv, err)
		}
		data, err := marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("encode OpenAPI v3 document of %s: %w", gv, err)
		}
		key := docPath(gv)
		d := &V3Document{JSON: data, Hash: fmt.Sprintf("%X", sha512.Sum512(data))}
		out.Docs[key] = d
		index[key] = v3IndexEntry{ServerRelativeURL: "/openapi/v3/" + key + "?hash=" + d.Hash}
	}
	if out.Index, err = marshal(map[string]any{"paths": index}); err != nil {
		return nil, fmt.Errorf("encode OpenAPI v3 index: %w", err)
	}
	return out, nil
}

func v3GroupVersion(b *builder, items []pathItem, info Info) (*v3Document, error) {
	doc := &v3Document{
		OpenAPI: "3.0.0",
		Info:    info.object(),
		Paths:   make(map[string]*v3PathItem, len(items)),
		Components: v3Components{
			Schemas: map[string]*Schema{},
			SecuritySchemes: map[string]securityScheme{
				bearerTokenScheme: {Type: "apiKey", Description: "Bearer Token authentication", Name: "authorization", In: "header"},
			},
		},
		Security: []map[string][]string{{bearerTokenScheme: {}}},
	}
	var roots []string
	ref := func(s *Schema) *Schema {
		roots = append(roots, strings.TrimPrefix(s.Ref, b.refPrefix()))
		return s
	}
	for _, it := range items {
		pi := &v3PathItem{Parameters: v3Params(it.Params)}
		for _, o := range it.Ops {
			vo := &v3Operation{
				Tags:        []string{o.Tag},
				Description: o.Description,
				OperationID: o.ID,
				Parameters:  v3Params(o.Params),
				Responses:   map[string]v3Response{},
				Action:      o.Action,
				GVK:         gvkExt(o.GVK),
			}
			if o.Body != nil {
				s, err := b.ref(o.Body)
				if err != nil {
					return nil, err
				}
				vo.RequestBody = &v3RequestBody{Content: content(o.Consumes, ref(s)), Required: o.Method != "delete"}
			}
			for _, r := range o.Responses {
				resp := v3Response{Description: r.Description}
				switch {
				case r.Body != nil:
					s, err := b.ref(r.Body)
					if err != nil {
						return nil, err
					}
					resp.Content = content(o.Produces, ref(s))
				case r.Text:
					resp.Content = content(o.Produces, &Schema{Type: "string"})
				}
				vo.Responses[r.Code] = resp
			}
			switch o.Method {
			case "get":
				pi.Get = vo
			case "put":
				pi.Put = vo
			case "post":
				pi.Post = vo
			case "delete":
				pi.Delete = vo
			case "patch":
				pi.Patch = vo
			default:
				return nil, fmt.Errorf("path %s: unknown method %q", it.Path, o.Method)
			}
		}
		doc.Paths[it.Path] = pi
	}
	// The schemas reachable from the operations, and the top-level kinds of
	// this group-version.
	for len(roots) > 0 {
		name := roots[len(roots)-1]
		roots = roots[:len(roots)-1]
		if _, ok := doc.Components.Schemas[name]; ok {
			continue
		}
		s, ok := b.defs[name]
		if !ok {
			return nil, fmt.Errorf("reference to undefined schema %s", name)
		}
		doc.Components.Schemas[name] = s
		refs(s, b.refPrefix(), func(n string) { roots = append(roots, n) })
	}
	return doc, nil
}

// Paths returns the document paths of v, sorted.
func (v *V3) Paths() []string {
	out := make([]string, 0, len(v.Docs))
	for k := range v.Docs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
