package cli

import (
	"reflect"
	"testing"
)

func TestValues(t *testing.T) {
	str := func(def string) Value { var s string; return String(&s, def) }
	integer := func(def int) Value { var i int; return Int(&i, def) }
	int64v := func(def int64) Value { var i int64; return Int64(&i, def) }
	boolean := func(def bool) Value { var b bool; return Bool(&b, def) }
	strs := func(def ...string) Value { var ss []string; return Strings(&ss, def) }
	for _, tc := range []struct {
		v       Value
		in      string
		want    string
		wantErr bool
	}{
		{str("d"), "x y", "x y", false},
		{str("d"), "", "", false},
		{integer(1), " 42", "42", false},
		{integer(1), "0x10", "16", false},
		{integer(1), "4.5", "1", true},
		{int64v(1), "-9000000000", "-9000000000", false},
		{int64v(1), "x", "1", true},
		{boolean(true), "false", "false", false},
		{boolean(false), "1", "true", false},
		{boolean(false), "yes", "false", true},
		{strs("d"), "a, b ,c", "a,b,c", false},
	} {
		err := tc.v.Set(tc.in)
		if (err != nil) != tc.wantErr || tc.v.String() != tc.want {
			t.Errorf("%T.Set(%q): %v, value %q; want %q (error %v)", tc.v, tc.in, err, tc.v.String(), tc.want, tc.wantErr)
		}
	}
}

func TestStringsRepeated(t *testing.T) {
	var ss []string
	v := Strings(&ss, []string{"d1", "d2"})
	if !reflect.DeepEqual(ss, []string{"d1", "d2"}) || v.defaultText() != `"d1,d2"` {
		t.Fatalf("default: %q, text %s", ss, v.defaultText())
	}
	for _, s := range []string{"a", "b,c"} {
		if err := v.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(ss, []string{"a", "b", "c"}) {
		t.Errorf("after --x a --x b,c: %q, want the default replaced", ss)
	}
}

func TestDefaults(t *testing.T) {
	var s string
	var i int
	var i64 int64
	var b bool
	var ss []string
	for _, tc := range []struct {
		v       Value
		text    string
		takeArg bool
	}{
		{String(&s, ""), "", true},
		{String(&s, "/var/lib"), `"/var/lib"`, true},
		{Int(&i, 6443), "6443", true},
		{Int64(&i64, 300), "300", true},
		{Bool(&b, false), "false", false},
		{Strings(&ss, nil), "", true},
	} {
		if tc.v.defaultText() != tc.text || tc.v.takesArg() != tc.takeArg {
			t.Errorf("%T: default text %q takes an argument %v; want %q %v", tc.v, tc.v.defaultText(), tc.v.takesArg(), tc.text, tc.takeArg)
		}
	}
	if s != "/var/lib" || i != 6443 || i64 != 300 || b || ss != nil {
		t.Errorf("defaults not stored: %q %d %d %v %q", s, i, i64, b, ss)
	}
}

func TestSet(t *testing.T) {
	var name string
	var port int
	s := &Set{flags: []*Flag{
		{Name: "name", Aliases: []string{"n"}, Value: String(&name, "")},
		{Name: "port", Value: Int(&port, 1)},
	}, set: map[*Flag]bool{}}
	if !s.Has("n") || !s.Has("port") || s.Has("other") || s.IsSet("name") {
		t.Fatal("Has/IsSet before Set")
	}
	if err := s.Set("n", "x"); err != nil || name != "x" || !s.IsSet("name") || !s.IsSet("n") {
		t.Errorf("Set by alias: %v name %q", err, name)
	}
	if err := s.Set("port", "p"); err == nil || s.IsSet("port") {
		t.Errorf("bad value: %v, set %v", err, s.IsSet("port"))
	}
	if err := s.Set("other", "1"); err == nil {
		t.Error("unknown flag set")
	}
}
