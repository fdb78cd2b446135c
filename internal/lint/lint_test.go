// Package lint holds the project's rules as tests: what review would
// otherwise have to remember.
package lint

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/moorage/moorage/"

// goPackages maps each package directory under the repository root to its
// parsed non-test files.
func goPackages(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			pkgs[rel] = append(pkgs[rel], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// Every package says what it is for (tailscale's pkgdoc rule).
func TestEveryPackageHasADoc(t *testing.T) {
	for dir, files := range goPackages(t) {
		documented := false
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				documented = true
			}
		}
		if !documented {
			t.Errorf("package %s has no package doc comment", dir)
		}
	}
}

// No god files: split a file by concern before it passes 800 lines.
func TestNoFileOver800Lines(t *testing.T) {
	for _, files := range goPackages(t) {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), "\n"); n > 800 {
				t.Errorf("%s has %d lines; split it by concern", f, n)
			}
		}
	}
}

// The store is reached by the API server only; controllers reach state
// through the API, so they behave the same on every store backend. Only
// internal/app wires everything together.
func TestImportBoundaries(t *testing.T) {
	rules := []struct {
		importer, imported string
		allowed            []string
	}{
		{"", "internal/store", []string{"internal/apiserver", "internal/app", "internal/store"}},
		{"internal/controller", "internal/apiserver", nil},
		{"internal/apiserver", "internal/controller", nil},
		{"", "internal/app", []string{"internal/cli", "internal/testserver"}},
	}
	for dir, files := range goPackages(t) {
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				if !strings.HasPrefix(path, module) {
					continue
				}
				target := strings.TrimPrefix(path, module)
				for _, r := range rules {
					if !strings.HasPrefix(dir, r.importer) || !strings.HasPrefix(target, r.imported) || strings.HasPrefix(dir, r.imported) {
						continue
					}
					ok := false
					for _, a := range r.allowed {
						ok = ok || strings.HasPrefix(dir, a)
					}
					if !ok {
						t.Errorf("%s imports %s, which only %v may", f, target, r.allowed)
					}
				}
			}
		}
	}
}
