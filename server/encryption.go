package server

import (
	"context"
	"log/slog"

	"github.com/orch-dev/orch/server/apiserver"
	"github.com/orch-dev/orch/server/encryption"
)

// secretsAtRest adapts the AES-GCM envelope to the API server's storage,
// binding each ciphertext to its storage key.
type secretsAtRest struct{ aead *encryption.AESGCM }

func (s secretsAtRest) TransformToStorage(ctx context.Context, data []byte, key string) ([]byte, error) {
	return s.aead.TransformToStorage(ctx, data, encryption.DefaultContext(key))
}

func (s secretsAtRest) TransformFromStorage(ctx context.Context, data []byte, key string) ([]byte, error) {
	out, _, err := s.aead.TransformFromStorage(ctx, data, encryption.DefaultContext(key))
	return out, err
}

// loadEncryption loads (or on first start creates) the key that encrypts
// Secrets at rest.
func loadEncryption(dataDir string, log *slog.Logger) (apiserver.Transformer, error) {
	a, err := encryption.Load(dataDir, log)
	if err != nil {
		return nil, err
	}
	return secretsAtRest{aead: a}, nil
}
