package cli

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// Flag is one option of a command: its names, help text, the environment
// variables it is read from and its typed value (which holds the default).
type Flag struct {
	// Name is the long name, given as --Name (or -Name).
	Name string
	// Aliases are other names, usually one letter (-d for --data-dir).
	Aliases []string
	// Usage is the one-line help text.
	Usage string
	// Env names the environment variables the flag is read from when the
	// command line does not set it; the first one present wins.
	Env []string
	// Value is where the flag's value goes: String, Int, Int64, Bool or
	// Strings bind it to a variable and set that to the default.
	Value Value
}

// Names is the flag's name followed by its aliases.
func (f *Flag) Names() []string {
	return append([]string{f.Name}, f.Aliases...)
}

// Value is a flag's typed value. The values this package makes (String,
// Int, Int64, Bool, Strings) are the only ones: the environment and help
// rendering need to know more about a value than flag.Value says.
type Value interface {
	flag.Value
	// defaultText is the default as help shows it; "" shows none.
	defaultText() string
	// takesArg reports whether the flag takes an argument (all but bools).
	takesArg() bool
	// repeatable reports whether the flag may be given more than once.
	repeatable() bool
	// fromEnv sets the value from an environment variable and reports
	// whether it counts as set.
	fromEnv(s string) (bool, error)
}

// errNotInt and its kin are the parse errors of the values: the flag
// package and Set.Set put the flag's name and the value in front.
var (
	errNotInt  = errors.New("not an integer")
	errNotBool = errors.New("not a boolean (true or false)")
)

// String binds a string flag to p and sets *p to def.
func String(p *string, def string) Value {
	*p = def
	return &stringValue{p: p, def: def}
}

type stringValue struct {
	p   *string
	def string
}

func (v *stringValue) Set(s string) error { *v.p = s; return nil }
func (v *stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v *stringValue) takesArg() bool   { return true }
func (v *stringValue) repeatable() bool { return false }
func (v *stringValue) defaultText() string {
	if v.def == "" {
		return ""
	}
	return strconv.Quote(v.def)
}

// fromEnv: a variable set to the empty string sets the flag to "" (an
// ORCH_TOKEN= line in an environment file means no token).
func (v *stringValue) fromEnv(s string) (bool, error) { *v.p = s; return true, nil }

// Int binds an int flag to p and sets *p to def. Values are parsed as Go
// integer literals (6443, 0x1a0b).
func Int(p *int, def int) Value {
	*p = def
	return &intValue{p: p, def: def}
}

type intValue struct {
	p   *int
	def int
}

func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, strconv.IntSize)
	if err != nil {
		return errNotInt
	}
	*v.p = int(n)
	return nil
}
func (v *intValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}
func (v *intValue) takesArg() bool      { return true }
func (v *intValue) repeatable() bool    { return false }
func (v *intValue) defaultText() string { return strconv.Itoa(v.def) }

// fromEnv: an empty variable leaves the flag unset.
func (v *intValue) fromEnv(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	return true, v.Set(s)
}

// Int64 binds an int64 flag to p and sets *p to def.
func Int64(p *int64, def int64) Value {
	*p = def
	return &int64Value{p: p, def: def}
}

type int64Value struct {
	p   *int64
	def int64
}

func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	if err != nil {
		return errNotInt
	}
	*v.p = n
	return nil
}
func (v *int64Value) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(*v.p, 10)
}
func (v *int64Value) takesArg() bool      { return true }
func (v *int64Value) repeatable() bool    { return false }
func (v *int64Value) defaultText() string { return strconv.FormatInt(v.def, 10) }

// fromEnv: an empty variable leaves the flag unset.
func (v *int64Value) fromEnv(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	return true, v.Set(s)
}

// Bool binds a boolean flag to p and sets *p to def. On the command line
// --name means true and --name=false false.
func Bool(p *bool, def bool) Value {
	*p = def
	return &boolValue{p: p, def: def}
}

type boolValue struct {
	p   *bool
	def bool
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errNotBool
	}
	*v.p = b
	return nil
}
func (v *boolValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatBool(*v.p)
}

// IsBoolFlag tells the flag package that --name needs no argument.
func (v *boolValue) IsBoolFlag() bool    { return true }
func (v *boolValue) takesArg() bool      { return false }
func (v *boolValue) repeatable() bool    { return false }
func (v *boolValue) defaultText() string { return strconv.FormatBool(v.def) }

// fromEnv: an empty variable means false.
func (v *boolValue) fromEnv(s string) (bool, error) {
	if s == "" {
		*v.p = false
		return true, nil
	}
	return true, v.Set(s)
}

// Strings binds a repeatable string flag to p and sets *p to def. Each
// occurrence adds its comma-separated items (spaces around them trimmed);
// the first occurrence replaces the default.
func Strings(p *[]string, def []string) Value {
	*p = append([]string(nil), def...)
	return &stringsValue{p: p, def: def}
}

type stringsValue struct {
	p        *[]string
	def      []string
	replaced bool
}

func (v *stringsValue) Set(s string) error {
	if !v.replaced {
		*v.p = nil
		v.replaced = true
	}
	for _, item := range strings.Split(s, ",") {
		*v.p = append(*v.p, strings.TrimSpace(item))
	}
	return nil
}
func (v *stringsValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v *stringsValue) takesArg() bool   { return true }
func (v *stringsValue) repeatable() bool { return true }
func (v *stringsValue) defaultText() string {
	if len(v.def) == 0 {
		return ""
	}
	return strconv.Quote(strings.Join(v.def, ","))
}

// fromEnv: the variable holds comma-separated items; empty means none.
func (v *stringsValue) fromEnv(s string) (bool, error) {
	if strings.TrimSpace(s) == "" {
		*v.p = nil
		v.replaced = true
		return true, nil
	}
	return true, v.Set(s)
}

// Set is a command's flags after parsing: which were set.
type Set struct {
	flags []*Flag
	set   map[*Flag]bool
}

// lookup returns the flag named name (or with that alias), or nil.
func (s *Set) lookup(name string) *Flag {
	for _, f := range s.flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// Has reports whether the command has a flag named name (or with that
// alias).
func (s *Set) Has(name string) bool { return s.lookup(name) != nil }

// IsSet reports whether the flag named name (or with that alias) was set,
// on the command line, from the environment or by Set.Set.
func (s *Set) IsSet(name string) bool {
	f := s.lookup(name)
	return f != nil && s.set[f]
}

// Set sets the flag named name (or with that alias) as the command line
// would, and marks it set; a repeatable flag takes one occurrence per
// call.
func (s *Set) Set(name, value string) error {
	f := s.lookup(name)
	if f == nil {
		return fmt.Errorf("no flag --%s", name)
	}
	if err := f.Value.Set(value); err != nil {
		return fmt.Errorf("invalid value %q for --%s: %w", value, f.Name, err)
	}
	s.set[f] = true
	return nil
}
