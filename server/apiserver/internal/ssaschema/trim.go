package ssaschema

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/structured-merge-diff/v6/schema"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
)

// Groups are the type-name prefixes of the API group versions the server
// serves (server/apiserver/scheme.go): their types and every type they
// reach make up the schema.
var Groups = []string{
	"io.k8s.api.core.v1.",
	"io.k8s.api.apps.v1.",
	"io.k8s.api.apps.v1beta1.",
	"io.k8s.api.apps.v1beta2.",
	"io.k8s.api.extensions.v1beta1.",
	"io.k8s.api.autoscaling.v1.",
	"io.k8s.api.coordination.v1.",
	"io.k8s.api.discovery.v1.",
	"io.k8s.api.events.v1.",
	"io.k8s.api.policy.v1.",
	"io.k8s.api.authentication.v1.",
}

// Trim returns the part of the schema document full (client-go's: "types:"
// then one "- name: ..." entry per type) holding the types named with one of
// prefixes, the types they reach, and the untyped helper types, each entry
// kept as it is.
func Trim(full string, prefixes []string) (string, error) {
	p, err := typed.NewParser(typed.YAMLObject(full))
	if err != nil {
		return "", fmt.Errorf("parse schema: %w", err)
	}
	byName := map[string]*schema.TypeDef{}
	for i := range p.Schema.Types {
		byName[p.Schema.Types[i].Name] = &p.Schema.Types[i]
	}
	keep := map[string]bool{}
	var visit func(name string) error
	var visitRef func(r schema.TypeRef) error
	visitAtom := func(a schema.Atom) error {
		if a.List != nil {
			if err := visitRef(a.List.ElementType); err != nil {
				return err
			}
		}
		if a.Map != nil {
			for _, f := range a.Map.Fields {
				if err := visitRef(f.Type); err != nil {
					return err
				}
			}
			if err := visitRef(a.Map.ElementType); err != nil {
				return err
			}
		}
		return nil
	}
	visitRef = func(r schema.TypeRef) error {
		if r.NamedType != nil {
			return visit(*r.NamedType)
		}
		return visitAtom(r.Inlined)
	}
	visit = func(name string) error {
		if keep[name] {
			return nil
		}
		t, ok := byName[name]
		if !ok {
			return fmt.Errorf("type %s is referred to but not defined", name)
		}
		keep[name] = true
		return visitAtom(t.Atom)
	}
	for name := range byName {
		root := strings.HasPrefix(name, "__untyped_")
		for _, pre := range prefixes {
			root = root || strings.HasPrefix(name, pre)
		}
		if root {
			if err := visit(name); err != nil {
				return "", err
			}
		}
	}

	// Cut the document into its entries and keep those named.
	const head = "types:\n"
	if !strings.HasPrefix(full, head) {
		return "", fmt.Errorf("schema does not start with %q", head)
	}
	entries := strings.Split(full[len(head):], "\n- name: ")
	entries[0] = strings.TrimPrefix(entries[0], "- name: ")
	var b strings.Builder
	b.WriteString(head)
	found := 0
	for _, e := range entries {
		name, _, _ := strings.Cut(e, "\n")
		if !keep[name] {
			continue
		}
		found++
		b.WriteString("- name: ")
		b.WriteString(e)
		if !strings.HasSuffix(e, "\n") {
			b.WriteString("\n")
		}
	}
	if found != len(keep) {
		missing := []string{}
		for n := range keep {
			if !strings.Contains(full, "\n- name: "+n+"\n") {
				missing = append(missing, n)
			}
		}
		sort.Strings(missing)
		return "", fmt.Errorf("kept %d entries of %d types; not found as entries: %v", found, len(keep), missing)
	}
	return b.String(), nil
}

// Extract returns the schema document in the source of client-go's
// applyconfigurations/internal package.
func Extract(src string) (string, error) {
	const open = "typed.YAMLObject(`"
	i := strings.Index(src, open)
	if i < 0 {
		return "", fmt.Errorf("no %s in the source", open)
	}
	rest := src[i+len(open):]
	j := strings.Index(rest, "`")
	if j < 0 {
		return "", fmt.Errorf("unterminated schema in the source")
	}
	return rest[:j], nil
}
