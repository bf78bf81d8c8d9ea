package runtime

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

// TestDocComments fails when the package or an exported identifier lacks a
// doc comment.
func TestDocComments(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	pkg := pkgs["runtime"]
	if pkg == nil {
		t.Fatal("package runtime not found")
	}
	hasPkgDoc := false
	for name, f := range pkg.Files {
		if f.Doc != nil {
			hasPkgDoc = true
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && d.Doc == nil && !isTestFunc(d) {
					t.Errorf("%s: %s has no doc comment", name, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.IsExported() && d.Doc == nil && ts.Doc == nil {
						t.Errorf("%s: type %s has no doc comment", name, ts.Name.Name)
					}
				}
			}
		}
	}
	if !hasPkgDoc {
		t.Error("package runtime has no doc comment")
	}
}

func isTestFunc(d *ast.FuncDecl) bool {
	n := d.Name.Name
	return len(n) > 4 && (n[:4] == "Test" || (len(n) > 9 && n[:9] == "Benchmark"))
}
