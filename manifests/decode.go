package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// document is one object of a manifest file, or why it could not be read.
type document struct {
	// where names the document for people: "document 2" (1-based, in
	// file order) or "document 2 item 1" inside a List.
	where string
	obj   *unstructured.Unstructured
	err   error
}

// decode splits a file into its objects. YAML files may hold several
// documents separated by "---"; JSON is YAML. A document that is empty or
// only comments is skipped; a `kind: List` (as kubectl writes) contributes
// its items. A document that cannot be read becomes a document with err set
// so that the rest of the file still applies.
func decode(data []byte) []document {
	var docs []document
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		where := fmt.Sprintf("document %d", i)
		if err != nil {
			// The reader cannot go past a broken document.
			return append(docs, document{where: where, err: fmt.Errorf("read: %w", err)})
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			docs = append(docs, document{where: where, err: fmt.Errorf("invalid YAML: %w", err)})
			continue
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue // only comments
		}
		var m map[string]interface{}
		if err := json.Unmarshal(js, &m); err != nil {
			docs = append(docs, document{where: where, err: fmt.Errorf("not an object: %w", err)})
			continue
		}
		obj := &unstructured.Unstructured{Object: m}
		if strings.HasSuffix(obj.GetKind(), "List") {
			items, ok := m["items"].([]interface{})
			if !ok && m["items"] != nil {
				docs = append(docs, document{where: where, err: errors.New("items of a List must be a list")})
				continue
			}
			for j, it := range items {
				w := fmt.Sprintf("%s item %d", where, j+1)
				im, ok := it.(map[string]interface{})
				if !ok {
					docs = append(docs, document{where: w, err: errors.New("not an object")})
					continue
				}
				docs = append(docs, checked(w, &unstructured.Unstructured{Object: im}))
			}
			continue
		}
		docs = append(docs, checked(where, obj))
	}
}

// checked turns obj into a document, with an error when it lacks what
// server-side apply needs to identify it.
func checked(where string, obj *unstructured.Unstructured) document {
	switch {
	case obj.GetAPIVersion() == "":
		return document{where: where, err: errors.New("apiVersion is missing")}
	case obj.GetKind() == "":
		return document{where: where, err: errors.New("kind is missing")}
	case obj.GetName() == "":
		return document{where: where, err: fmt.Errorf("%s %s: metadata.name is missing or not a string (generateName cannot be applied)", obj.GetAPIVersion(), obj.GetKind())}
	}
	legacyDefaults(obj)
	return document{where: where, obj: obj}
}

// legacyDefaults gives a workload of the old API versions
// (extensions/v1beta1, apps/v1beta1) the selector those versions default
// from the template's labels, as old tutorials rely on: server-side apply
// validates the configuration before the server's own defaults fill it.
func legacyDefaults(obj *unstructured.Unstructured) {
	switch obj.GetAPIVersion() {
	case "extensions/v1beta1", "apps/v1beta1":
	default:
		return
	}
	switch obj.GetKind() {
	case "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet":
	default:
		return
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "selector"); found {
		return
	}
	labels, found, err := unstructured.NestedStringMap(obj.Object, "spec", "template", "metadata", "labels")
	if err != nil || !found || len(labels) == 0 {
		return // validation reports the missing selector
	}
	sel := map[string]interface{}{}
	for k, v := range labels {
		sel[k] = v
	}
	_ = unstructured.SetNestedField(obj.Object, sel, "spec", "selector", "matchLabels")
}
