package openapi

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

type v2Document struct {
	Swagger             string                    `json:"swagger"`
	Info                infoObject                `json:"info"`
	Paths               map[string]*v2PathItem    `json:"paths"`
	Definitions         map[string]*Schema        `json:"definitions"`
	Parameters          map[string]v2Parameter    `json:"parameters"`
	SecurityDefinitions map[string]securityScheme `json:"securityDefinitions"`
	Security            []map[string][]string     `json:"security"`
}

type v2PathItem struct {
	Get        *v2Operation  `json:"get,omitempty"`
	Put        *v2Operation  `json:"put,omitempty"`
	Post       *v2Operation  `json:"post,omitempty"`
	Delete     *v2Operation  `json:"delete,omitempty"`
	Patch      *v2Operation  `json:"patch,omitempty"`
	Parameters []v2Parameter `json:"parameters,omitempty"`
}

type v2Operation struct {
	Description string                `json:"description"`
	Consumes    []string              `json:"consumes"`
	Produces    []string              `json:"produces"`
	Schemes     []string              `json:"schemes"`
	Tags        []string              `json:"tags"`
	OperationID string                `json:"operationId"`
	Parameters  []v2Parameter         `json:"parameters,omitempty"`
	Responses   map[string]v2Response `json:"responses"`
	Action      string                `json:"x-kubernetes-action"`
	GVK         *GVK                  `json:"x-kubernetes-group-version-kind"`
}

type v2Parameter struct {
	Ref         string  `json:"$ref,omitempty"`
	Name        string  `json:"name,omitempty"`
	In          string  `json:"in,omitempty"`
	Description string  `json:"description,omitempty"`
	Required    bool    `json:"required,omitempty"`
	Type        string  `json:"type,omitempty"`
	UniqueItems bool    `json:"uniqueItems,omitempty"`
	Schema      *Schema `json:"schema,omitempty"`
}

type v2Response struct {
	Description string  `json:"description"`
	Schema      *Schema `json:"schema,omitempty"`
}

// v2Params returns references to the parameters, which are added to the
// document's shared parameters as upstream does: operations repeat the same
// few parameters with long descriptions, and sharing them makes the
// document smaller and cheaper to parse.
func v2Params(shared map[string]v2Parameter, ps []param) ([]v2Parameter, error) {
	out := make([]v2Parameter, 0, len(ps))
	for _, p := range ps {
		vp := v2Parameter{Name: p.Name, In: p.In, Description: p.Description, Required: p.Required, Type: p.Type, UniqueItems: p.UniqueItems}
		b, err := marshal(vp)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		key := p.Name + "-" + base64.RawURLEncoding.EncodeToString(sum[:6])
		shared[key] = vp
		out = append(out, v2Parameter{Ref: "#/parameters/" + key})
	}
	return out, nil
}

// BuildV2 returns the swagger 2.0 document of the resources as JSON, with
// every definition and every path of every group-version.
func BuildV2(resources []Resource, info Info) ([]byte, error) {
	if err := validate(resources); err != nil {
		return nil, err
	}
	items, err := paths(resources)
	if err != nil {
		return nil, err
	}
	b, err := definitions(resources, items, false)
	if err != nil {
		return nil, err
	}
	doc := v2Document{
		Swagger:     "2.0",
		Info:        info.object(),
		Paths:       make(map[string]*v2PathItem, len(items)),
		Definitions: b.defs,
		Parameters:  map[string]v2Parameter{},
		SecurityDefinitions: map[string]securityScheme{
			bearerTokenScheme: {Type: "apiKey", Description: "Bearer Token authentication", Name: "authorization", In: "header"},
		},
		Security: []map[string][]string{{bearerTokenScheme: {}}},
	}
	for _, it := range items {
		params, err := v2Params(doc.Parameters, it.Params)
		if err != nil {
			return nil, err
		}
		pi := &v2PathItem{Parameters: params}
		for _, o := range it.Ops {
			params, err := v2Params(doc.Parameters, o.Params)
			if err != nil {
				return nil, err
			}
			vo := &v2Operation{
				Description: o.Description,
				Consumes:    o.Consumes,
				Produces:    o.Produces,
				Schemes:     []string{"https"},
				Tags:        []string{o.Tag},
				OperationID: o.ID,
				Parameters:  params,
				Responses:   map[string]v2Response{},
				Action:      o.Action,
				GVK:         gvkExt(o.GVK),
			}
			if o.Body != nil {
				ref, err := b.ref(o.Body)
				if err != nil {
					return nil, err
				}
				vo.Parameters = append([]v2Parameter{{Name: "body", In: "body", Required: o.Method != "delete", Schema: ref}}, vo.Parameters...)
			}
			for _, r := range o.Responses {
				resp := v2Response{Description: r.Description}
				switch {
				case r.Body != nil:
					if resp.Schema, err = b.ref(r.Body); err != nil {
						return nil, err
					}
				case r.Text:
					resp.Schema = &Schema{Type: "string"}
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
	out, err := marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("encode OpenAPI v2 document: %w", err)
	}
	return out, nil
}
