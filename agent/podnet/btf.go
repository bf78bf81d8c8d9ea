package podnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// kernelBTF is where the kernel describes its own types.
const kernelBTF = "/sys/kernel/btf/vmlinux"

// btfFuncIDs finds the type ids of the named functions (kfuncs) in the
// kernel's BTF at path, as a BPF program's kfunc call names them. It reads
// only what it needs: the string section once and the type section as a
// stream, a few megabytes in all (a full BTF parser holds ~40 MB of Go
// objects for the kernel's types).
func btfFuncIDs(path string, names ...string) (map[string]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	defer f.Close()
	var h struct {
		Magic   uint16
		Version uint8
		Flags   uint8
		HdrLen  uint32
		TypeOff uint32
		TypeLen uint32
		StrOff  uint32
		StrLen  uint32
	}
	if err := binary.Read(f, binary.NativeEndian, &h); err != nil {
		return nil, fmt.Errorf("kernel BTF %s: header: %w", path, err)
	}
	if h.Magic != 0xeb9f {
		return nil, fmt.Errorf("kernel BTF %s: bad magic %#x (or not this machine's byte order)", path, h.Magic)
	}
	strs := make([]byte, h.StrLen)
	if _, err := f.ReadAt(strs, int64(h.HdrLen)+int64(h.StrOff)); err != nil {
		return nil, fmt.Errorf("kernel BTF %s: strings: %w", path, err)
	}
	want := make(map[uint32]string, len(names)) // name offset -> name
	for _, name := range names {
		i := bytes.Index(strs, []byte("\x00"+name+"\x00"))
		if i < 0 {
			return nil, fmt.Errorf("kernel BTF %s: no %s", path, name)
		}
		want[uint32(i+1)] = name
	}
	strs = nil
	r := bufio.NewReaderSize(io.NewSectionReader(f, int64(h.HdrLen)+int64(h.TypeOff), int64(h.TypeLen)), 64<<10)
	ids := make(map[string]uint32, len(names))
	var t [3]uint32 // name_off, info, size/type
	for id := uint32(1); len(ids) < len(names); id++ {
		if err := binary.Read(r, binary.NativeEndian, &t); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("kernel BTF %s: type %d: %w", path, id, err)
		}
		kind, vlen := t[1]>>24&0x1f, int64(t[1]&0xffff)
		if name, ok := want[t[0]]; ok && kind == btfKindFunc {
			ids[name] = id
		}
		extra, err := btfExtra(kind, vlen)
		if err != nil {
			return nil, fmt.Errorf("kernel BTF %s: type %d: %w", path, id, err)
		}
		if _, err := r.Discard(int(extra)); err != nil {
			return nil, fmt.Errorf("kernel BTF %s: type %d: %w", path, id, err)
		}
	}
	for _, name := range names {
		if _, ok := ids[name]; !ok {
			return nil, fmt.Errorf("kernel BTF %s: no function %s", path, name)
		}
	}
	return ids, nil
}

const btfKindFunc = 12

// btfExtra is the size of what follows a type's 12-byte common part.
func btfExtra(kind uint32, vlen int64) (int64, error) {
	switch kind {
	case 2, 7, 8, 9, 10, 11, 12, 16, 18: // ptr, fwd, typedef, volatile, const, restrict, func, float, type tag
		return 0, nil
	case 1, 14, 17: // int, var, decl tag
		return 4, nil
	case 3: // array
		return 12, nil
	case 4, 5, 15, 19: // struct, union, datasec, enum64
		return 12 * vlen, nil
	case 6, 13: // enum, func proto
		return 8 * vlen, nil
	}
	return 0, fmt.Errorf("unknown BTF kind %d", kind)
}
