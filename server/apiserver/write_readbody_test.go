package apiserver

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// TestReadIntoExactSize reads bodies of every size around the buffer's
// capacity, in one read and one byte at a time, and expects them whole
// without the buffer growing when it was sized to the body.
func TestReadIntoExactSize(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 1000, 4096} {
		body := bytes.Repeat([]byte("x"), size)
		for _, slow := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(body)
			if slow {
				r = iotest.OneByteReader(r)
			}
			buf := make([]byte, 0, size+1)
			got, err := readInto(buf, r)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("size %d: got %d bytes", size, len(got))
			}
			if cap(got) != size+1 {
				t.Errorf("size %d: buffer grew to %d", size, cap(got))
			}
		}
		// A body longer than announced still arrives whole.
		got, err := readInto(make([]byte, 0, 1), bytes.NewReader(body))
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("size %d into a small buffer: %d bytes, %v", size, len(got), err)
		}
	}
	// A read error is returned.
	if _, err := readInto(nil, iotest.ErrReader(io.ErrUnexpectedEOF)); err != io.ErrUnexpectedEOF {
		t.Fatalf("error: %v", err)
	}
}
