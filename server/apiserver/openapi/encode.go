package openapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// marshal encodes v as compact JSON without HTML escaping (descriptions
// are full of < and >; escaping them only makes the documents bigger).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

type infoObject struct {
	Title   string `json:"title"`
	Version string `json:"version"`
}

func (i Info) object() infoObject {
	if i.Title == "" {
		i.Title = "Kubernetes"
	}
	if i.Version == "" {
		i.Version = "unversioned"
	}
	return infoObject(i)
}

type securityScheme struct {
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
	Name        string `json:"name,omitempty"`
	In          string `json:"in,omitempty"`
	Scheme      string `json:"scheme,omitempty"`
}

// definitions builds the schemas of every type the resources use, in one
// document style, with the x-kubernetes-group-version-kind extensions.
func definitions(resources []Resource, items []pathItem, v3 bool) (*builder, error) {
	b := newBuilder(v3)
	gvs := map[schema.GroupVersion]bool{}
	for i := range resources {
		r := &resources[i]
		gvs[r.GVK.GroupVersion()] = true
		if err := b.addGVK(typeOf(r.Object), r.GVK); err != nil {
			return nil, fmt.Errorf("%s: %w", r.GVK, err)
		}
		if r.List != nil {
			if err := b.addGVK(typeOf(r.List), r.listGVK()); err != nil {
				return nil, fmt.Errorf("%s: %w", r.listGVK(), err)
			}
		}
		for _, s := range r.Subresources {
			if s.Object != nil {
				if err := b.addGVK(typeOf(s.Object), s.GVK); err != nil {
					return nil, fmt.Errorf("%s: %w", s.GVK, err)
				}
			}
		}
	}
	// Status is the core group's; the option and event kinds are
	// registered in every group-version, as upstream lists them.
	if err := b.addGVK(reflect.TypeFor[metav1.Status](), schema.GroupVersionKind{Version: "v1", Kind: "Status"}); err != nil {
		return nil, err
	}
	for gv := range gvs {
		for _, t := range []reflect.Type{reflect.TypeFor[metav1.DeleteOptions](), reflect.TypeFor[metav1.WatchEvent]()} {
			if err := b.addGVK(t, gv.WithKind(t.Name())); err != nil {
				return nil, err
			}
		}
	}
	// Bodies of operations (Patch) and anything else the paths name.
	for _, it := range items {
		for _, o := range it.Ops {
			for _, t := range append([]reflect.Type{o.Body}, bodies(o.Responses)...) {
				if t != nil {
					if _, err := b.define(t); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return b, nil
}

func bodies(rs []response) []reflect.Type {
	var out []reflect.Type
	for _, r := range rs {
		if r.Body != nil {
			out = append(out, r.Body)
		}
	}
	return out
}

func gvkExt(g schema.GroupVersionKind) *GVK {
	v := toGVK(g)
	return &v
}
