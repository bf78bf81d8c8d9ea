package apiserver

import "testing"

// TestOwnedWriter: one Write is kept as it is; a second is appended to a
// copy, leaving the first caller's buffer alone.
func TestOwnedWriter(t *testing.T) {
	first := make([]byte, 3, 16)
	copy(first, "abc")
	var w ownedWriter
	if _, err := w.Write(first); err != nil {
		t.Fatal(err)
	}
	if &w.b[0] != &first[0] {
		t.Error("a single Write was copied")
	}
	if _, err := w.Write([]byte("de")); err != nil {
		t.Fatal(err)
	}
	if string(w.b) != "abcde" {
		t.Errorf("after two writes %q, want abcde", w.b)
	}
	if string(first[:5]) == "abcde" {
		t.Error("the second Write went into the first caller's buffer")
	}
}
