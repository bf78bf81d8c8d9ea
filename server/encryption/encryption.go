// Package encryption encrypts values at rest (Secrets in the store) with
// AES-256-GCM under a key kept in the data directory.
//
// An encrypted value is self-describing, in the format of the Kubernetes API
// server's aesgcm provider: the prefix "k8s:enc:aesgcm:v1:orch:" (provider,
// version and key name), a random 12-byte nonce, then the ciphertext and
// its 16-byte tag. Values without the "k8s:enc:" prefix are passed through
// unchanged on read (and reported stale), so data written before encryption
// was enabled stays readable and is encrypted when next written; stored
// Kubernetes objects (JSON starting with '{', or protobuf starting with
// "k8s\x00") can never start with that prefix by accident.
package encryption

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

const (
	// Prefix starts every value this package encrypts.
	Prefix = "k8s:enc:aesgcm:v1:" + KeyName + ":"
	// KeyName names orch's key in Prefix.
	KeyName = "orch"
	// KeySize is the AES-256 key length in bytes.
	KeySize = 32

	envelopePrefix = "k8s:enc:"
	nonceSize      = 12
	tagSize        = 16
)

// ErrDecrypt is wrapped by errors for encrypted values that fail
// authentication: tampered or truncated data, another key, or authenticated
// data (the storage key) that differs from the one used to encrypt.
var ErrDecrypt = errors.New("encrypted value failed authentication (tampered, truncated or another key)")

// ErrUnknownFormat is wrapped by errors for values that carry the
// "k8s:enc:" envelope prefix of another provider or key.
var ErrUnknownFormat = errors.New("value encrypted in an unknown format")

// Context carries the authenticated data bound to a value (upstream's
// value.Context): typically the storage key, so that a ciphertext copied
// under another key does not decrypt.
type Context interface {
	AuthenticatedData() []byte
}

// DefaultContext is a Context whose authenticated data is the byte slice
// itself (nil for none).
type DefaultContext []byte

// AuthenticatedData returns c.
func (c DefaultContext) AuthenticatedData() []byte { return c }

// Transformer converts values between their stored and their plain form,
// as upstream's k8s.io/apiserver value.Transformer, so the API server can
// wrap its storage with it.
type Transformer interface {
	// TransformToStorage returns the stored form of data.
	TransformToStorage(ctx context.Context, data []byte, dataCtx Context) ([]byte, error)
	// TransformFromStorage returns the plain form of a stored value;
	// stale reports that the value should be rewritten (it was not stored
	// in the current form).
	TransformFromStorage(ctx context.Context, data []byte, dataCtx Context) (out []byte, stale bool, err error)
}

// AESGCM encrypts with AES-256-GCM and random nonces. It is safe for
// concurrent use. Random 96-bit nonces bound the safe use of one key to
// about 2^32 encryptions, far beyond the writes of a cluster's Secrets.
type AESGCM struct {
	aead cipher.AEAD
}

var _ Transformer = (*AESGCM)(nil)

// New returns an AESGCM for a KeySize-byte key.
func New(key []byte) (*AESGCM, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("encryption: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("encryption: %w", err)
	}
	return &AESGCM{aead: aead}, nil
}

// Encrypt returns Prefix + nonce + ciphertext of plaintext, with no
// authenticated data.
func (a *AESGCM) Encrypt(plaintext []byte) ([]byte, error) { return a.seal(plaintext, nil) }

// Decrypt reverses Encrypt. A value without the "k8s:enc:" prefix is
// returned unchanged (plaintext written before encryption existed); a value
// of another format or key, or one that fails authentication, is an error.
func (a *AESGCM) Decrypt(b []byte) ([]byte, error) {
	out, _, err := a.open(b, nil)
	return out, err
}

// TransformToStorage encrypts data bound to dataCtx's authenticated data.
func (a *AESGCM) TransformToStorage(_ context.Context, data []byte, dataCtx Context) ([]byte, error) {
	return a.seal(data, authData(dataCtx))
}

// TransformFromStorage decrypts data bound to dataCtx's authenticated
// data. Unencrypted values pass through unchanged with stale=true.
func (a *AESGCM) TransformFromStorage(_ context.Context, data []byte, dataCtx Context) ([]byte, bool, error) {
	return a.open(data, authData(dataCtx))
}

func authData(c Context) []byte {
	if c == nil {
		return nil
	}
	return c.AuthenticatedData()
}

func (a *AESGCM) seal(plaintext, ad []byte) ([]byte, error) {
	out := make([]byte, len(Prefix)+nonceSize, len(Prefix)+nonceSize+len(plaintext)+tagSize)
	copy(out, Prefix)
	nonce := out[len(Prefix):]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypt: generate nonce: %w", err)
	}
	return a.aead.Seal(out, nonce, plaintext, ad), nil
}

// open never writes into b: stored values may live in read-only memory
// (bbolt's mmap).
func (a *AESGCM) open(b, ad []byte) ([]byte, bool, error) {
	if !bytes.HasPrefix(b, []byte(envelopePrefix)) {
		return b, true, nil
	}
	if !bytes.HasPrefix(b, []byte(Prefix)) {
		end := bytes.LastIndexByte(b[:min(len(b), 64)], ':')
		return nil, false, fmt.Errorf("decrypt: %w: prefix %q, want %q", ErrUnknownFormat, b[:end+1], Prefix)
	}
	body := b[len(Prefix):]
	if len(body) < nonceSize+tagSize {
		return nil, false, fmt.Errorf("decrypt: %w: %d bytes after the prefix, need at least %d", ErrDecrypt, len(body), nonceSize+tagSize)
	}
	out, err := a.aead.Open(nil, body[:nonceSize], body[nonceSize:], ad)
	if err != nil {
		return nil, false, fmt.Errorf("decrypt: %w", ErrDecrypt)
	}
	return out, false, nil
}
