package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTokenRoundTrip(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		want Token
	}{
		{"K10" + hash + "::server:s3cret", Token{CAHash: hash, Username: "server", Secret: "s3cret"}},
		{"K10" + strings.ToUpper(hash) + "::node:a:b", Token{CAHash: hash, Username: "node", Secret: "a:b"}},
		{"  mysecret\n", Token{Username: "server", Secret: "mysecret"}},
		{"K10short", Token{Username: "server", Secret: "K10short"}},
	} {
		got, err := ParseToken(tc.in)
		if err != nil {
			t.Errorf("ParseToken(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		again, err := ParseToken(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
		}
	}
}

func TestParseTokenErrors(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, in := range []string{
		"", "   ", "two words",
		"K10abc::server:x", // short hash
		"K10" + strings.Repeat("zz", 32) + "::server:x", // not hex
		"K10" + hash + "::server:",                      // empty secret
		"K10" + hash + "::nosecret",                     // no user:secret
		"K10" + hash + ":::x",                           // empty user
		"K10" + hash + "::server:a b",
	} {
		if tok, err := ParseToken(in); err == nil {
			t.Errorf("ParseToken(%q) = %+v, want error", in, tok)
		}
	}
}

func TestVerifyCA(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	tok := Token{CAHash: CAHash(ca), Username: "server", Secret: "x"}
	if err := tok.VerifyCA(ca); err != nil {
		t.Errorf("matching CA: %v", err)
	}
	if err := tok.VerifyCA(append([]byte("x"), ca...)); !errors.Is(err, ErrCAMismatch) {
		t.Errorf("other CA: %v, want ErrCAMismatch", err)
	}
	if err := (Token{Secret: "x"}).VerifyCA(ca); !errors.Is(err, ErrNoCAHash) {
		t.Errorf("bare secret: %v, want ErrNoCAHash", err)
	}
}

func TestSecretEqual(t *testing.T) {
	if !SecretEqual("abc", "abc") || SecretEqual("abc", "abd") || SecretEqual("abc", "abcd") || SecretEqual("", "a") {
		t.Error("SecretEqual wrong")
	}
}

func TestLoadWithGivenToken(t *testing.T) {
	dir := t.TempDir()
	o := testOpts()
	o.Token = "bare-secret-1"
	p := mustLoad(t, dir, o)
	tok := p.Token()
	if tok.Secret != "bare-secret-1" || tok.CAHash != CAHash(p.CACertPEM()) {
		t.Fatalf("token %+v", tok)
	}
	if !p.VerifySecret("bare-secret-1") || p.VerifySecret("bare-secret-2") || p.VerifySecret("") {
		t.Error("VerifySecret wrong")
	}
	tokenFile := filepath.Join(dir, "server", "token")
	if got := strings.TrimSpace(string(readFile(t, tokenFile))); got != tok.String() {
		t.Errorf("token file %q, want %q", got, tok.String())
	}

	// Restart without --token keeps the secret.
	if p2 := mustLoad(t, dir, testOpts()); p2.Token() != tok {
		t.Errorf("token after restart %+v, want %+v", p2.Token(), tok)
	}

	// The full token pinning this CA is accepted; a new secret replaces the old one.
	o.Token = "K10" + tok.CAHash + "::server:other-secret"
	if p3 := mustLoad(t, dir, o); p3.Token().Secret != "other-secret" {
		t.Errorf("full token secret not used: %+v", p3.Token())
	}

	// A full token pinning another CA is refused and changes nothing.
	before := readFile(t, tokenFile)
	o.Token = "K10" + strings.Repeat("0", 64) + "::server:evil"
	_, err := Load(dir, o, testLog())
	if !errors.Is(err, ErrCAMismatch) || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("want --token CA mismatch, got %v", err)
	}
	if string(readFile(t, tokenFile)) != string(before) {
		t.Error("token file changed by failed Load")
	}

	o.Token = "bad secret"
	if _, err := Load(dir, o, testLog()); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("invalid --token: %v", err)
	}
}

func TestLoadStoredTokenPinningOtherCA(t *testing.T) {
	dir := t.TempDir()
	mustLoad(t, dir, testOpts())
	tokenFile := filepath.Join(dir, "server", "token")
	if err := os.WriteFile(tokenFile, []byte("K10"+strings.Repeat("1", 64)+"::server:x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir, testOpts(), testLog())
	if !errors.Is(err, ErrCAMismatch) || !strings.Contains(err.Error(), tokenFile) {
		t.Fatalf("want CA mismatch naming %s, got %v", tokenFile, err)
	}
}

func TestLoadStoredBareTokenUpgraded(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "server", "token")
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("preset-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, dir, testOpts())
	if p.Token().Secret != "preset-secret" || p.Token().CAHash == "" {
		t.Fatalf("token %+v", p.Token())
	}
	if got := strings.TrimSpace(string(readFile(t, tokenFile))); got != p.Token().String() {
		t.Errorf("token file not upgraded to full form: %q", got)
	}
}
