package kubectl

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpackOnceAndFallback(t *testing.T) {
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(ro, nil, 0o644); err != nil { // a file: not a usable dir
		t.Fatal(err)
	}
	dir := t.TempDir()
	packed := gz(t, []byte("#!/bin/sh\necho hi\n"))
	p1, err := unpack(packed, []string{filepath.Join(ro, "sub"), dir})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p1) != dir {
		t.Fatalf("unpacked to %s, want under %s", p1, dir)
	}
	fi, err := os.Stat(p1)
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("not executable: %v %v", err, fi)
	}
	p2, err := unpack(packed, []string{dir})
	if err != nil || p2 != p1 {
		t.Fatalf("second unpack: %v %s", err, p2)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestUnpackCorrupt(t *testing.T) {
	dir := t.TempDir()
	if _, err := unpack([]byte("not gzip"), []string{dir}); err == nil {
		t.Fatal("corrupt archive unpacked")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left after failure: %v", entries)
	}
}

func TestExecWithoutPacked(t *testing.T) {
	if err := Exec(nil, []string{t.TempDir()}, ""); err != ErrNotPacked {
		t.Fatalf("got %v", err)
	}
}
