package ssaschema

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSchemaIsCurrent: schema.yaml is what gen.go makes from the client-go
// version go.mod requires (run `go generate` after an upgrade).
func TestSchemaIsCurrent(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/client-go").Output()
	if err != nil {
		t.Fatalf("locate k8s.io/client-go: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "applyconfigurations", "internal", "internal.go"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := Extract(string(src))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Trim(full, Groups)
	if err != nil {
		t.Fatal(err)
	}
	_, got, _ := strings.Cut(schemaYAML, "\n") // the generated-code comment
	if got != want {
		t.Fatalf("schema.yaml is stale: run go generate in %s", "server/apiserver/internal/ssaschema")
	}
	if _, err := Parser(); err != nil {
		t.Fatal(err)
	}
}

// TestTrim keeps the named types, what they reach and the untyped helpers,
// and nothing else; a reference to an undefined type is an error.
func TestTrim(t *testing.T) {
	full := `types:
- name: a.A
  map:
    fields:
    - name: b
      type:
        namedType: b.B
    - name: l
      type:
        list:
          elementType:
            namedType: c.C
          elementRelationship: atomic
- name: b.B
  scalar: string
- name: c.C
  scalar: numeric
- name: d.D
  scalar: string
- name: __untyped_atomic_
  scalar: untyped
`
	got, err := Trim(full, []string{"a."})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a.A", "b.B", "c.C", "__untyped_atomic_"} {
		if !strings.Contains(got, "- name: "+n+"\n") {
			t.Errorf("%s missing:\n%s", n, got)
		}
	}
	if strings.Contains(got, "d.D") {
		t.Errorf("d.D kept:\n%s", got)
	}
	if _, err := Trim(strings.Replace(full, "namedType: b.B", "namedType: x.X", 1), []string{"a."}); err == nil {
		t.Error("a reference to an undefined type was accepted")
	}
	if _, err := Extract("no schema here"); err == nil {
		t.Error("Extract of a source without a schema succeeded")
	}
}
