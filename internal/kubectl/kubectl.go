// Package kubectl runs the upstream kubectl packed inside the orch binary:
// on first use it unpacks the compressed binary into a content-addressed
// path under the data directory (or the user's cache when that is not
// writable) and executes it, defaulting KUBECONFIG to orch's admin
// kubeconfig as `k3s kubectl` does.
package kubectl

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNotPacked: this orch binary was built without kubectl inside (a plain
// `go build`; `make` packs it).
var ErrNotPacked = errors.New("this orch binary carries no kubectl: build it with `make`")

// Exec replaces the current process with kubectl and args. dirs are the
// directories to unpack into, tried in order; kubeconfig is used when
// KUBECONFIG is unset and the file exists.
func Exec(args []string, dirs []string, kubeconfig string) error {
	packed := packedKubectl()
	if len(packed) == 0 {
		return ErrNotPacked
	}
	path, err := unpack(packed, dirs)
	if err != nil {
		return err
	}
	env := os.Environ()
	if os.Getenv("KUBECONFIG") == "" && kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err == nil {
			env = append(env, "KUBECONFIG="+kubeconfig)
		}
	}
	return syscall.Exec(path, append([]string{"kubectl"}, args...), env)
}

// unpack writes the binary once per content hash and returns its path.
func unpack(packed []byte, dirs []string) (string, error) {
	sum := sha256.Sum256(packed)
	name := "kubectl-" + hex.EncodeToString(sum[:8])
	var errs []error
	for _, dir := range dirs {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err == nil && fi.Mode()&0o111 != 0 {
			return path, nil
		}
		if err := write(packed, dir, path); err != nil {
			errs = append(errs, err)
			continue
		}
		return path, nil
	}
	return "", fmt.Errorf("unpack kubectl: %w", errors.Join(errs...))
}

func write(packed []byte, dir, path string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return fmt.Errorf("packed kubectl is corrupt: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".kubectl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, zr); err != nil {
		tmp.Close()
		return fmt.Errorf("unpack kubectl into %s: %w", dir, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
