package podnet

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// btfBlob builds a BTF file of the given types (each its 12-byte common
// part and what follows) and string table.
func btfBlob(t *testing.T, types [][]uint32, strs string) string {
	t.Helper()
	var tb bytes.Buffer
	for _, ty := range types {
		if err := binary.Write(&tb, binary.NativeEndian, ty); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	hdr := []any{uint16(0xeb9f), uint8(1), uint8(0), uint32(24),
		uint32(0), uint32(tb.Len()), uint32(tb.Len()), uint32(len(strs))}
	for _, v := range hdr {
		if err := binary.Write(&b, binary.NativeEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	b.Write(tb.Bytes())
	b.WriteString(strs)
	p := filepath.Join(t.TempDir(), "btf")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func info(kind, vlen uint32) uint32 { return kind<<24 | vlen }

func TestBTFFuncIDs(t *testing.T) {
	// Strings: 0 "", 1 "int", 5 "foo", 9 "bar", 13 "xfoo", 18 "s".
	strs := "\x00int\x00foo\x00bar\x00xfoo\x00s\x00"
	types := [][]uint32{
		{1, info(1, 0), 4, 32},                 // 1 int
		{18, info(4, 2), 8, 0, 1, 0, 0, 1, 32}, // 2 struct s, two members
		{0, info(13, 1), 1, 0, 1},              // 3 func proto (int)
		{13, info(12, 0), 3},                   // 4 func xfoo
		{0, info(2, 0), 2},                     // 5 ptr
		{9, info(12, 0), 3},                    // 6 func bar
		{5, info(7, 0), 0},                     // 7 fwd "foo": not a func
		{5, info(12, 0), 3},                    // 8 func foo
	}
	p := btfBlob(t, types, strs)
	ids, err := btfFuncIDs(p, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	if ids["foo"] != 8 || ids["bar"] != 6 {
		t.Errorf("ids %v, want foo 8, bar 6", ids)
	}
	for _, c := range []struct {
		name, path, want string
		names            []string
	}{
		{"missing string", p, "no baz", []string{"baz"}},
		{"string but no func", p, "no function s", []string{"s"}},
		{"no file", filepath.Join(t.TempDir(), "none"), "no such file", []string{"foo"}},
		{"bad magic", writeFile(t, "\x01\x02\x03\x04rest of a header....."), "bad magic", []string{"foo"}},
		{"short", writeFile(t, "\x9f\xeb"), "header", []string{"foo"}},
		{"unknown kind", btfBlob(t, [][]uint32{{0, info(31, 0), 0}, {5, info(12, 0), 0}}, strs), "unknown BTF kind 31", []string{"foo"}},
	} {
		if _, err := btfFuncIDs(c.path, c.names...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBTFFuncIDsKernel checks the ids against cilium/ebpf's full parser of
// this machine's kernel BTF.
func TestBTFFuncIDsKernel(t *testing.T) {
	if _, err := os.Stat(kernelBTF); err != nil {
		t.Skip("no kernel BTF here")
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skip(err)
	}
	names := []string{"bpf_skb_ct_lookup", "bpf_ct_release"}
	ids, err := btfFuncIDs(kernelBTF, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			t.Fatal(err)
		}
		want, err := spec.TypeID(fn)
		if err != nil {
			t.Fatal(err)
		}
		if ids[name] != uint32(want) {
			t.Errorf("%s: id %d, want %d", name, ids[name], want)
		}
	}
}
