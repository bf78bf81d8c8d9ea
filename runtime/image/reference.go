package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// DockerHub is the registry name images without a registry belong to.
const DockerHub = "docker.io"

// reference is a parsed, normalised image reference:
// "busybox:stable" → {docker.io, library/busybox, stable, ""}.
type reference struct {
	Registry   string // "docker.io", "example.com:5000"
	Repository string // "library/busybox"
	Tag        string // "" when only a digest was given
	Digest     string // "sha256:<hex>" or ""
}

// Name is the normalised repository name, "docker.io/library/busybox".
func (r reference) Name() string { return r.Registry + "/" + r.Repository }

// String is the normalised reference: name:tag, name@digest or name:tag@digest.
func (r reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// parseReference normalises an image reference the way Docker does: no
// registry means docker.io, a one-part Docker Hub name gets "library/", no
// tag or digest means ":latest".
func parseReference(s string) (reference, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return reference{}, fmt.Errorf("%w: empty", ErrBadReference)
	}
	base, digest, hasDigest := strings.Cut(s, "@")
	var r reference
	if hasDigest {
		d, err := name.NewDigest(stripTag(base) + "@" + digest)
		if err != nil {
			return reference{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
		}
		r.Digest = d.DigestStr()
		r.Registry, r.Repository = d.RegistryStr(), d.RepositoryStr()
		if t, err := name.NewTag(base); err == nil && base != stripTag(base) {
			r.Tag = t.TagStr()
		}
	} else {
		t, err := name.NewTag(base)
		if err != nil {
			return reference{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
		}
		r.Tag = t.TagStr()
		r.Registry, r.Repository = t.RegistryStr(), t.RepositoryStr()
	}
	if r.Registry == name.DefaultRegistry {
		r.Registry = DockerHub
	}
	return r, nil
}

// stripTag removes a ":tag" suffix from a name (not a ":port").
func stripTag(s string) string {
	i := strings.LastIndex(s, ":")
	if i < 0 || strings.Contains(s[i:], "/") {
		return s
	}
	return s[:i]
}

// NormalizeReference returns the canonical form of an image reference,
// e.g. "busybox" → "docker.io/library/busybox:latest".
func NormalizeReference(s string) (string, error) {
	r, err := parseReference(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

var idRE = regexp.MustCompile(`^(sha256:)?([0-9a-f]{4,64})$`)

// idPrefix returns the hex part of s if s can be an image ID or ID prefix.
func idPrefix(s string) (string, bool) {
	m := idRE.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	if m[1] != "" && len(m[2]) != 64 {
		return "", false
	}
	return m[2], true
}
