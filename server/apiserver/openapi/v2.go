package openapi

import (
	"fmt"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
)

type v2Document struct {
	Swagger             string                    `json:"swagger"`
	Info                infoObject                `json:"info"`
	Paths               map[string]*v2PathItem    `json:"paths"`
	Definitions         map[string]*Schema        `json:"definitions"`
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
	Name        string  `json:"name"`
	In          string  `json:"in"`
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

func v2Params(ps []param) []v2Parameter {
	out := make([]v2Parameter, 0, len(ps))
	for _, p := range ps {
		out = append(out, v2Parameter{Name: p.Name, In: p.In, Description: p.Description, Required: p.Required, Type: p.Type, UniqueItems: p.UniqueItems})
	}
	return out
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
		SecurityDefinitions: map[string]securityScheme{
			bearerTokenScheme: {Type: "apiKey", Description: "Bearer Token authentication", Name: "authorization", In: "header"},
		},
		Security: []map[string][]string{{bearerTokenScheme: {}}},
	}
	for _, it := range items {
		pi := &v2PathItem{Parameters: v2Params(it.Params)}
		for _, o := range it.Ops {
			vo := &v2Operation{
				Description: o.Description,
				Consumes:    o.Consumes,
				Produces:    o.Produces,
				Schemes:     []string{"https"},
				Tags:        []string{o.Tag},
				OperationID: o.ID,
				Parameters:  v2Params(o.Params),
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

// V2Protobuf converts a JSON swagger 2.0 document to the protobuf form
// (gnostic's openapi_v2.Document) that client-go's discovery client asks
// for with Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf.
func V2Protobuf(jsonDoc []byte) ([]byte, error) {
	doc, err := openapi_v2.ParseDocument(jsonDoc)
	if err != nil {
		return nil, fmt.Errorf("parse OpenAPI v2 document: %w", err)
	}
	out, err := proto.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode OpenAPI v2 protobuf: %w", err)
	}
	return out, nil
}
