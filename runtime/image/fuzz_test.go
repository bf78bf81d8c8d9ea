package image

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCleanEntryPath checks that an accepted tar entry name always stays
// inside the layer root.
func FuzzCleanEntryPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/etc/passwd", "a/../../b", "./", "a/./b/..", "..", "/..", "a//b/../../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := cleanEntryPath(name)
		if err != nil {
			return
		}
		root := "/layer/root"
		full := filepath.Join(root, p)
		if full != root && !strings.HasPrefix(full, root+"/") {
			t.Fatalf("%q → %q escapes to %q", name, p, full)
		}
	})
}
