package image

import (
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestNormalizeReference(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for in, want := range map[string]string{
		"busybox":                        "docker.io/library/busybox:latest",
		"busybox:stable":                 "docker.io/library/busybox:stable",
		"library/busybox:1.36":           "docker.io/library/busybox:1.36",
		"docker.io/busybox":              "docker.io/library/busybox:latest",
		"index.docker.io/library/redis":  "docker.io/library/redis:latest",
		"rancher/k3s:v1":                 "docker.io/rancher/k3s:v1",
		"example.com:5000/a/b:c":         "example.com:5000/a/b:c",
		"127.0.0.1:5000/x":               "127.0.0.1:5000/x:latest",
		"busybox@" + d:                   "docker.io/library/busybox@" + d,
		"busybox:1.36@" + d:              "docker.io/library/busybox:1.36@" + d,
		"example.com:5000/a/b:c@" + d:    "example.com:5000/a/b:c@" + d,
		"localhost:5000/redis-master:v1": "localhost:5000/redis-master:v1",
	} {
		got, err := NormalizeReference(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "busybox@sha256:short", "a b", "busybox:bad tag"} {
		if _, err := NormalizeReference(bad); !errors.Is(err, ErrBadReference) {
			t.Errorf("%q: got %v, want ErrBadReference", bad, err)
		}
	}
}

func TestIDPrefix(t *testing.T) {
	for in, want := range map[string]bool{
		"abcd": true, "abc": false, "sha256:abcd": false, "0123456789ab": true,
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": true,
		"busybox": false,
	} {
		if _, ok := idPrefix(in); ok != want {
			t.Errorf("idPrefix(%q) = %v, want %v", in, ok, want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\`: `/x\`, `/t\011`: "/t\t", `/n\09`: `/n\09`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("%q → %q, want %q", in, got, want)
		}
	}
}

func TestPickPlatform(t *testing.T) {
	desc := func(arch, variant string) v1.Descriptor {
		return v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: arch + variant}, Platform: &v1.Platform{OS: "linux", Architecture: arch, Variant: variant}}
	}
	im := &v1.IndexManifest{Manifests: []v1.Descriptor{
		{Digest: v1.Hash{Algorithm: "sha256", Hex: "attest"}, Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}},
		desc("amd64", ""), desc("arm64", "v8"), desc("arm", "v6"), desc("arm", "v7"), desc("riscv64", ""),
	}}
	for _, tc := range []struct {
		want v1.Platform
		hex  string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "amd64"},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "arm64v8"},
		{v1.Platform{OS: "linux", Architecture: "arm64"}, "arm64v8"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "armv7"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v8"}, "armv7"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, "armv6"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v5"}, ""},
		{v1.Platform{OS: "linux", Architecture: "s390x"}, ""},
	} {
		s := &Store{platform: tc.want}
		d, err := s.pickPlatform(im)
		if tc.hex == "" {
			if !errors.Is(err, ErrPlatform) {
				t.Errorf("%s: got %v, want ErrPlatform", tc.want, err)
			}
			continue
		}
		if err != nil || d.Digest.Hex != tc.hex {
			t.Errorf("%s: got %s %v, want %s", tc.want, d.Digest.Hex, err, tc.hex)
		}
	}
}
