package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/gnostic-models/compiler"
	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	openapi_v3 "github.com/google/gnostic-models/openapiv3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
)

// V2Protobuf converts a JSON swagger 2.0 document to the protobuf form
// (gnostic's openapi_v2.Document) that client-go's discovery client asks
// for with Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf.
func V2Protobuf(jsonDoc []byte) ([]byte, error) {
	root, err := yamlNode(jsonDoc)
	if err != nil {
		return nil, fmt.Errorf("parse OpenAPI v2 document: %w", err)
	}
	doc, err := openapi_v2.NewDocument(root, compiler.NewContextWithExtensions("$root", root, nil, nil))
	if err != nil {
		return nil, fmt.Errorf("parse OpenAPI v2 document: %w", err)
	}
	out, err := proto.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode OpenAPI v2 protobuf: %w", err)
	}
	return out, nil
}

// V3Protobuf converts a JSON OpenAPI v3 document to gnostic's protobuf form
// (application/com.github.proto-openapi.spec.v3@v1.0+protobuf).
func V3Protobuf(jsonDoc []byte) ([]byte, error) {
	root, err := yamlNode(jsonDoc)
	if err != nil {
		return nil, fmt.Errorf("parse OpenAPI v3 document: %w", err)
	}
	doc, err := openapi_v3.NewDocument(root, compiler.NewContextWithExtensions("$root", root, nil, nil))
	if err != nil {
		return nil, fmt.Errorf("parse OpenAPI v3 document: %w", err)
	}
	out, err := proto.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode OpenAPI v3 protobuf: %w", err)
	}
	return out, nil
}

// yamlNode turns a JSON object into the yaml.Node tree gnostic's compiler
// reads. gnostic's own ParseDocument gets there through a YAML parser,
// which costs several times more time and garbage than the JSON tokenizer
// on documents of this size.
func yamlNode(data []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, err := nodeFrom(dec)
	if err != nil {
		return nil, err
	}
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("document is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the document")
	}
	return n, nil
}

func nodeFrom(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := k.(string)
				if !ok {
					return nil, fmt.Errorf("object key %v is not a string", k)
				}
				v, err := nodeFrom(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := nodeFrom(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		v := "false"
		if t {
			v = "true"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: v}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}
