package openapi

import (
	"strings"
	"testing"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	openapi_v3 "github.com/google/gnostic-models/openapiv3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// TestProtobufMatchesGnostic: the direct JSON-to-node conversion gives the
// document gnostic's own parser gives, up to the formatting of the YAML
// text that holds vendor extensions.
func TestProtobufMatchesGnostic(t *testing.T) {
	j, err := BuildV2(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := V2Protobuf(j)
	if err != nil {
		t.Fatal(err)
	}
	var got openapi_v2.Document
	if err := proto.Unmarshal(pb, &got); err != nil {
		t.Fatal(err)
	}
	want, err := openapi_v2.ParseDocument(j)
	if err != nil {
		t.Fatal(err)
	}
	normalizeAny(t, &got)
	normalizeAny(t, want)
	if !proto.Equal(&got, want) {
		t.Error("v2 protobuf differs from gnostic's ParseDocument")
	}

	v3, err := BuildV3(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	for path, d := range v3.Docs {
		pb, err := V3Protobuf(d.JSON)
		if err != nil {
			t.Fatal(err)
		}
		var got openapi_v3.Document
		if err := proto.Unmarshal(pb, &got); err != nil {
			t.Fatal(err)
		}
		want, err := openapi_v3.ParseDocument(d.JSON)
		if err != nil {
			t.Fatal(err)
		}
		normalizeAny(t, &got)
		normalizeAny(t, want)
		if !proto.Equal(&got, want) {
			t.Errorf("%s: v3 protobuf differs from gnostic's ParseDocument", path)
		}
	}
}

// normalizeAny rewrites every Any's YAML text in canonical JSON, so that
// block and flow styles of the same value compare equal.
func normalizeAny(t *testing.T, m proto.Message) {
	t.Helper()
	var walk func(m proto.Message)
	walk = func(m proto.Message) {
		r := m.ProtoReflect()
		if a, ok := m.(interface{ GetYaml() string }); ok && r.Descriptor().Name() == "Any" {
			if y := a.GetYaml(); y != "" {
				js, err := yaml.YAMLToJSON([]byte(y))
				if err != nil {
					t.Fatalf("Any YAML %q: %v", y, err)
				}
				r.Set(r.Descriptor().Fields().ByName("yaml"), protoreflect.ValueOfString(strings.TrimSpace(string(js))))
			}
		}
		r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := range l.Len() {
					walk(l.Get(i).Message().Interface())
				}
			case fd.IsMap():
			case fd.Message() != nil:
				walk(v.Message().Interface())
			}
			return true
		})
	}
	walk(m)
}
