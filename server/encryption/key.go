package encryption

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// KeyPath is the key file's path relative to the data directory.
const KeyPath = "server/cred/encryption-key"

const keyMode = 0o600

// Load returns an AESGCM for the key in <dataDir>/server/cred/encryption-key,
// generating a random key (mode 0600, directory 0700) on first start. The
// file holds the key in standard base64 and a newline. An existing file is
// never replaced: content that is not a base64 KeySize-byte key is an error
// naming the file (a new key would make every stored Secret unreadable). A
// file readable by others is tightened to 0600 with a warning.
func Load(dataDir string, log *slog.Logger) (*AESGCM, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dataDir, filepath.FromSlash(KeyPath))
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key := make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("encryption: generate key: %w", err)
		}
		if err := createKeyFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n")); err != nil {
			return nil, err
		}
		log.Info("generated encryption key for Secrets at rest", "file", path)
		return New(key)
	case err != nil:
		return nil, fmt.Errorf("encryption: read key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("encryption: key file %s: not base64: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption: key file %s: key is %d bytes, want %d", path, len(key), KeySize)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("encryption: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		log.Warn("encryption key file was accessible to others; setting mode 0600", "file", path, "mode", st.Mode().Perm())
		if err := os.Chmod(path, keyMode); err != nil {
			return nil, fmt.Errorf("encryption: key file %s: %w", path, err)
		}
	}
	return New(key)
}

// createKeyFile writes a new key file atomically and without replacing an
// existing one: the content goes to a synced temporary file that is then
// hard-linked to path (failing if path appeared meanwhile).
func createKeyFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("encryption: create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".encryption-key.tmp-*")
	if err != nil {
		return fmt.Errorf("encryption: write key file %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	if err := f.Chmod(keyMode); err != nil {
		_ = f.Close()
		return fmt.Errorf("encryption: write key file %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("encryption: write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("encryption: write key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("encryption: write key file %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("encryption: create key file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
