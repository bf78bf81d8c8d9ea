package image

import (
	"errors"
	"testing"
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
