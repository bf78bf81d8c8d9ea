package manifests

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxFileSize bounds what one manifest file may hold.
const maxFileSize = 8 << 20

// file is one manifest file found in the directory.
type file struct {
	path string // relative to the directory, with slashes
	data []byte
	sum  string // sha256 of data, hex
	skip bool   // a "<file>.skip" marker exists
	err  error  // the file could not be read
}

// isManifest reports whether name is a manifest by its extension.
func isManifest(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// isHidden reports whether name is a dotfile (editors' swap files, the
// "..data" links of mounted ConfigMaps): those are never applied.
func isHidden(name string) bool { return strings.HasPrefix(name, ".") }

// scan reads every manifest under dir, sorted by path. A missing or
// unreadable dir is an error (nothing is pruned then); a file that cannot
// be read is returned with err set.
func scan(dir string) ([]file, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("manifests directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("manifests directory %s is not a directory", dir)
	}
	var files []file
	skips := map[string]bool{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			// An unreadable subdirectory: its files would look removed
			// and be pruned, so fail the scan instead.
			return err
		}
		name := d.Name()
		if path != dir && isHidden(name) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.HasSuffix(name, ".skip") {
			skips[strings.TrimSuffix(rel, ".skip")] = true
			return nil
		}
		if !isManifest(name) {
			return nil
		}
		f := file{path: rel}
		f.data, f.err = readManifest(path)
		if f.err == nil {
			s := sha256.Sum256(f.data)
			f.sum = hex.EncodeToString(s[:])
		} else if errors.Is(f.err, errNotRegular) {
			return nil // a directory or device named *.yaml
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan manifests directory: %w", err)
	}
	for i := range files {
		files[i].skip = skips[files[i].path]
	}
	return files, nil // WalkDir walks in lexical order
}

var errNotRegular = errors.New("not a regular file")

func readManifest(path string) ([]byte, error) {
	st, err := os.Stat(path) // follows symlinks
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errNotRegular
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("%d bytes is more than the %d a manifest may hold", st.Size(), maxFileSize)
	}
	return os.ReadFile(path)
}
