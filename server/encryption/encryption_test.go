package encryption

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newT(t testing.TB) *AESGCM {
	t.Helper()
	a, err := Load(t.TempDir(), testLog())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRoundTrip(t *testing.T) {
	a := newT(t)
	for _, pt := range [][]byte{nil, {}, []byte("x"), []byte(`{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}`), bytes.Repeat([]byte{0, 1, 2}, 10000)} {
		ct, err := a.Encrypt(pt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(ct, []byte("k8s:enc:aesgcm:v1:orch:")) {
			t.Errorf("ciphertext lacks prefix: %q", ct[:min(len(ct), 30)])
		}
		if len(pt) > 8 && bytes.Contains(ct, pt[:8]) {
			t.Error("plaintext visible in ciphertext")
		}
		if want := len(Prefix) + 12 + len(pt) + 16; len(ct) != want {
			t.Errorf("ciphertext length %d, want %d", len(ct), want)
		}
		got, err := a.Decrypt(ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Decrypt = %q, %v; want %q", got, err, pt)
		}
	}
	c1, _ := a.Encrypt([]byte("same"))
	c2, _ := a.Encrypt([]byte("same"))
	if bytes.Equal(c1, c2) {
		t.Error("two encryptions of the same value are equal (nonce reuse)")
	}
}

func TestPassthrough(t *testing.T) {
	a := newT(t)
	for _, v := range [][]byte{nil, []byte(`{"kind":"Secret"}`), []byte("k8s\x00\x0a\x09protobuf"), []byte("k8s:en")} {
		got, err := a.Decrypt(v)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("Decrypt(%q) = %q, %v; want passthrough", v, got, err)
		}
		out, stale, err := a.TransformFromStorage(context.Background(), v, DefaultContext("/registry/secrets/ns/a"))
		if err != nil || !stale || !bytes.Equal(out, v) {
			t.Errorf("TransformFromStorage(%q) = %q, %v, %v; want passthrough, stale", v, out, stale, err)
		}
	}
}

func TestTamperAndWrongKey(t *testing.T) {
	a := newT(t)
	ct, err := a.Encrypt([]byte("top secret value"))
	if err != nil {
		t.Fatal(err)
	}
	orig := bytes.Clone(ct)
	for i := len(Prefix); i < len(ct); i++ {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := a.Decrypt(bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("flipped byte %d: err %v, want ErrDecrypt", i, err)
		}
	}
	for _, n := range []int{len(Prefix), len(Prefix) + 5, len(Prefix) + 27, len(ct) - 1} {
		if _, err := a.Decrypt(ct[:n]); !errors.Is(err, ErrDecrypt) {
			t.Errorf("truncated to %d: err %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := a.Decrypt(append(bytes.Clone(ct), 0)); !errors.Is(err, ErrDecrypt) {
		t.Errorf("extended: err %v", err)
	}
	if !bytes.Equal(ct, orig) {
		t.Error("Decrypt modified its input")
	}
	if _, err := newT(t).Decrypt(ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other key: err %v, want ErrDecrypt", err)
	}
	for _, v := range []string{"k8s:enc:aescbc:v1:key1:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "k8s:enc:aesgcm:v1:other:" + string(ct[len(Prefix):]), "k8s:enc:"} {
		_, err := a.Decrypt([]byte(v))
		if !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("Decrypt(%q): err %v, want ErrUnknownFormat", v[:min(len(v), 24)], err)
		}
	}
}

func TestAuthenticatedData(t *testing.T) {
	a := newT(t)
	ctx := context.Background()
	ct, err := a.TransformToStorage(ctx, []byte("v"), DefaultContext("/registry/secrets/ns/a"))
	if err != nil {
		t.Fatal(err)
	}
	out, stale, err := a.TransformFromStorage(ctx, ct, DefaultContext("/registry/secrets/ns/a"))
	if err != nil || stale || string(out) != "v" {
		t.Errorf("same key: %q %v %v", out, stale, err)
	}
	if _, _, err := a.TransformFromStorage(ctx, ct, DefaultContext("/registry/secrets/ns/b")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("value moved to another key decrypted: %v", err)
	}
	if _, err := a.Decrypt(ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Decrypt without authenticated data: %v", err)
	}
	// nil Context means no authenticated data, as Encrypt.
	ct2, err := a.TransformToStorage(ctx, []byte("w"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.Decrypt(ct2); err != nil || string(out) != "w" {
		t.Errorf("nil context: %q %v", out, err)
	}
}

func TestConcurrent(t *testing.T) {
	a := newT(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			pt := bytes.Repeat([]byte{byte(i)}, 100+i)
			for range 200 {
				ct, err := a.Encrypt(pt)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := a.Decrypt(ct)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("round trip: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	a, err := Load(dir, testLog())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "server", "cred", "encryption-key")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("cred dir mode %v, want 0700", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(key) != 32 {
		t.Errorf("key file content: %d bytes, %v", len(key), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("cred dir has %d entries, want only the key", len(entries))
	}

	ct, err := a.Encrypt([]byte("persisted"))
	if err != nil {
		t.Fatal(err)
	}
	// A second Load reuses the key: old values still decrypt.
	a2, err := Load(dir, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a2.Decrypt(ct); err != nil || string(got) != "persisted" {
		t.Errorf("after reload: %q, %v", got, err)
	}
	if b2, _ := os.ReadFile(path); !bytes.Equal(b, b2) {
		t.Error("key file rewritten on reload")
	}

	// Loose permissions are tightened.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, testLog()); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after reload %v, want 0600", st.Mode().Perm())
	}
}

func TestKeyFileCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not base64": "not base64 !!!\n",
		"short":      base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n",
		"empty":      "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "server", "cred", "encryption-key")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir, testLog())
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("want error naming %s, got %v", path, err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("corrupt key file replaced")
			}
		})
	}
}

func TestNewBadKey(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New with %d-byte key: want error", n)
		}
	}
}

func benchValue() []byte {
	v := make([]byte, 1024)
	for i := range v {
		v[i] = byte(i)
	}
	return v
}

func BenchmarkEncrypt1KB(b *testing.B) {
	a := newT(b)
	v := benchValue()
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Encrypt(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt1KB(b *testing.B) {
	a := newT(b)
	ct, err := a.Encrypt(benchValue())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Decrypt(ct); err != nil {
			b.Fatal(err)
		}
	}
}
