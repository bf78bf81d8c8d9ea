package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// TokenPrefix starts every full join token.
const TokenPrefix = "K10"

// ServerUsername is the user part of the tokens orch generates, as k3s.
const ServerUsername = "server"

// ErrNoCAHash is returned by Token.VerifyCA for a bare-secret token, which
// cannot pin the cluster CA; the caller decides whether to trust the CA
// anyway (k3s does, with a warning).
var ErrNoCAHash = errors.New("join token has no CA hash (bare secret): the cluster CA cannot be verified")

// ErrCAMismatch is returned when a token's CA hash does not match the CA.
var ErrCAMismatch = errors.New("join token CA hash does not match the cluster CA")

// Token is a parsed join token. The full form, as k3s, is
// K10<hex sha256 of the CA certificate PEM>::<username>:<secret>; a bare
// secret is accepted too, and then CAHash is empty.
type Token struct {
	// CAHash is the lowercase hex SHA-256 of the CA PEM, or "" for a bare
	// secret.
	CAHash string
	// Username is the user part of a full token ("server" for tokens orch
	// generates and for bare secrets).
	Username string
	// Secret is the shared secret that authenticates agents to the server.
	Secret string
}

// ParseToken parses a full K10 token or a bare secret. Surrounding
// whitespace is ignored (token files end in a newline).
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("parse join token: empty")
	}
	if !strings.HasPrefix(s, TokenPrefix) || !strings.Contains(s, "::") {
		if err := checkSecret(s); err != nil {
			return Token{}, fmt.Errorf("parse join token: %w", err)
		}
		return Token{Username: ServerUsername, Secret: s}, nil
	}
	hash, creds, _ := strings.Cut(s[len(TokenPrefix):], "::")
	if len(hash) != sha256.Size*2 {
		return Token{}, fmt.Errorf("parse join token: CA hash after %q must be %d hex digits, got %d characters", TokenPrefix, sha256.Size*2, len(hash))
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return Token{}, fmt.Errorf("parse join token: CA hash is not hex: %w", err)
	}
	user, secret, ok := strings.Cut(creds, ":")
	if !ok || user == "" {
		return Token{}, errors.New("parse join token: expected K10<ca-hash>::<username>:<secret>")
	}
	if err := checkSecret(secret); err != nil {
		return Token{}, fmt.Errorf("parse join token: %w", err)
	}
	return Token{CAHash: strings.ToLower(hash), Username: user, Secret: secret}, nil
}

func checkSecret(s string) error {
	if s == "" {
		return errors.New("secret is empty")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return errors.New("secret contains whitespace or control characters")
		}
	}
	return nil
}

// String returns the token in its k3s form, or the bare secret when the
// token has no CA hash.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Secret
	}
	user := t.Username
	if user == "" {
		user = ServerUsername
	}
	return TokenPrefix + t.CAHash + "::" + user + ":" + t.Secret
}

// VerifyCA checks that caPEM (the CA certificate bytes served by the
// server) hashes to the token's CA hash. It returns ErrNoCAHash for a bare
// secret and an error wrapping ErrCAMismatch when the hashes differ.
func (t Token) VerifyCA(caPEM []byte) error {
	if t.CAHash == "" {
		return ErrNoCAHash
	}
	if got := CAHash(caPEM); got != t.CAHash {
		return fmt.Errorf("%w: token pins %s, CA certificate hashes to %s", ErrCAMismatch, t.CAHash, got)
	}
	return nil
}

// CAHash returns the lowercase hex SHA-256 of the CA PEM bytes, the value
// full join tokens carry.
func CAHash(caPEM []byte) string {
	sum := sha256.Sum256(caPEM)
	return hex.EncodeToString(sum[:])
}

// SecretEqual compares two secrets in time independent of their content
// (both are hashed first, so their lengths do not leak either).
func SecretEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
