package cli

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// testApp is an app with a leaf command "run" (every kind of flag, one
// argument list), a group "img" with subcommands and a raw command "raw".
type testApp struct {
	app    *App
	out    bytes.Buffer
	env    map[string]string
	before map[string]string // flag → value Before sets when still unset

	name  string
	port  int
	big   int64
	on    bool
	items []string
	dir   string
	quiet bool

	ran  string   // the command whose Action ran
	args []string // its arguments
}

func newTestApp() *testApp {
	t := &testApp{env: map[string]string{}, before: map[string]string{}}
	action := func(name string) func(context.Context, []string) error {
		return func(_ context.Context, args []string) error {
			t.ran, t.args = name, args
			return nil
		}
	}
	dirFlag := func() *Flag { return &Flag{Name: "dir", Value: String(&t.dir, "/var"), Usage: "a directory"} }
	t.app = &App{
		Name:    "prog",
		Usage:   "a test program",
		Version: "1.2.3",
		Stdout:  &t.out,
		LookupEnv: func(k string) (string, bool) {
			v, ok := t.env[k]
			return v, ok
		},
		Commands: []*Command{
			{
				Name:      "run",
				Aliases:   []string{"r"},
				Usage:     "run something",
				ArgsUsage: "THING...",
				Flags: []*Flag{
					{Name: "name", Aliases: []string{"n"}, Value: String(&t.name, "def"), Env: []string{"P_NAME", "P_NAME2"}, Usage: "the name"},
					{Name: "port", Value: Int(&t.port, 80), Env: []string{"P_PORT"}, Usage: "the port"},
					{Name: "big", Value: Int64(&t.big, 1<<40), Env: []string{"P_BIG"}, Usage: "a big number"},
					{Name: "on", Value: Bool(&t.on, false), Env: []string{"P_ON"}, Usage: "switch it on"},
					{Name: "item", Value: Strings(&t.items, []string{"x"}), Env: []string{"P_ITEM"}, Usage: "an item"},
				},
				Before: func(s *Set) error {
					for k, v := range t.before {
						if !s.IsSet(k) {
							if err := s.Set(k, v); err != nil {
								return err
							}
						}
					}
					return nil
				},
				Action: action("run"),
			},
			{
				Name:  "img",
				Usage: "images",
				Flags: []*Flag{dirFlag()},
				Commands: []*Command{
					{Name: "ls", Aliases: []string{"list"}, Usage: "list them",
						Flags:  []*Flag{{Name: "quiet", Aliases: []string{"q"}, Value: Bool(&t.quiet, false), Usage: "IDs only"}, dirFlag()},
						Action: action("img ls")},
					{Name: "rm", Usage: "remove them", ArgsUsage: "IMAGE...", Flags: []*Flag{dirFlag()}, Action: action("img rm")},
				},
			},
			{Name: "raw", Usage: "pass everything on", Raw: true, Action: action("raw")},
		},
	}
	return t
}

func (t *testApp) run(args ...string) error {
	return t.app.Run(context.Background(), args)
}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		args   []string
		env    map[string]string
		before map[string]string
		want   func(a *testApp) bool
	}{
		{"defaults", nil, nil, nil, func(a *testApp) bool {
			return a.name == "def" && a.port == 80 && a.big == 1<<40 && !a.on && reflect.DeepEqual(a.items, []string{"x"})
		}},
		{"flags", []string{"--name", "f", "-port=81", "--big", "0x10", "--on", "--item", "a", "--item", "b,c"}, nil, nil, func(a *testApp) bool {
			return a.name == "f" && a.port == 81 && a.big == 16 && a.on && reflect.DeepEqual(a.items, []string{"a", "b", "c"})
		}},
		{"alias", []string{"-n", "short"}, nil, nil, func(a *testApp) bool { return a.name == "short" }},
		{"env", nil, map[string]string{"P_NAME2": "e2", "P_PORT": "82", "P_BIG": "-5", "P_ON": "true", "P_ITEM": "a, b"}, nil, func(a *testApp) bool {
			return a.name == "e2" && a.port == 82 && a.big == -5 && a.on && reflect.DeepEqual(a.items, []string{"a", "b"})
		}},
		{"first env wins", nil, map[string]string{"P_NAME": "e1", "P_NAME2": "e2"}, nil, func(a *testApp) bool { return a.name == "e1" }},
		{"empty env", nil, map[string]string{"P_NAME": "", "P_PORT": "", "P_ON": "", "P_ITEM": ""}, map[string]string{"port": "83", "name": "b"},
			func(a *testApp) bool { return a.name == "" && a.port == 83 && !a.on && len(a.items) == 0 }},
		{"flag over env", []string{"--name", "f", "--item", "z", "--on=false"}, map[string]string{"P_NAME": "e", "P_ITEM": "a,b", "P_ON": "1"}, nil,
			func(a *testApp) bool { return a.name == "f" && reflect.DeepEqual(a.items, []string{"z"}) && !a.on }},
		{"env over before", nil, map[string]string{"P_PORT": "84"}, map[string]string{"port": "85", "on": "true"},
			func(a *testApp) bool { return a.port == 84 && a.on }},
		{"flag over before", []string{"--port", "86"}, nil, map[string]string{"port": "85", "item": "q"},
			func(a *testApp) bool { return a.port == 86 && reflect.DeepEqual(a.items, []string{"q"}) }},
	} {
		a := newTestApp()
		for k, v := range tc.env {
			a.env[k] = v
		}
		for k, v := range tc.before {
			a.before[k] = v
		}
		if err := a.run(append([]string{"run"}, tc.args...)...); err != nil {
			t.Errorf("%s: %v", tc.desc, err)
			continue
		}
		if a.ran != "run" || !tc.want(a) {
			t.Errorf("%s: ran %q name=%q port=%d big=%d on=%v items=%q", tc.desc, a.ran, a.name, a.port, a.big, a.on, a.items)
		}
	}
}

func TestArgsAndSubcommands(t *testing.T) {
	a := newTestApp()
	if err := a.run("r", "--port", "1", "a", "--port", "2"); err != nil || a.ran != "run" || a.port != 1 || !reflect.DeepEqual(a.args, []string{"a", "--port", "2"}) {
		t.Errorf("run with args: %v ran %q port %d args %q", err, a.ran, a.port, a.args)
	}
	a = newTestApp()
	if err := a.run("img", "--dir", "/a", "list", "-q"); err != nil || a.ran != "img ls" || a.dir != "/a" || !a.quiet {
		t.Errorf("img --dir /a list -q: %v ran %q dir %q quiet %v", err, a.ran, a.dir, a.quiet)
	}
	a = newTestApp()
	if err := a.run("img", "--dir", "/a", "rm", "--dir", "/b", "i1", "i2"); err != nil || a.ran != "img rm" || a.dir != "/b" || len(a.args) != 2 {
		t.Errorf("img --dir /a rm --dir /b: %v ran %q dir %q args %q", err, a.ran, a.dir, a.args)
	}
	a = newTestApp()
	raw := []string{"--help", "-v", "--name", "x", "help"}
	if err := a.run(append([]string{"raw"}, raw...)...); err != nil || a.ran != "raw" || !reflect.DeepEqual(a.args, raw) || a.out.Len() != 0 {
		t.Errorf("raw: %v ran %q args %q out %q", err, a.ran, a.args, a.out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string // in the message, besides the hint
		hint string
	}{
		{[]string{"nope"}, nil, []string{`unknown command "nope"`}, "prog --help"},
		{[]string{"--nope"}, nil, []string{"-nope"}, "prog --help"},
		{[]string{"run", "--nope"}, nil, []string{"run: ", "-nope"}, "prog run --help"},
		{[]string{"run", "--port", "eighty"}, nil, []string{"run: ", `"eighty"`, "-port", "not an integer"}, "prog run --help"},
		{[]string{"run", "--on=maybe"}, nil, []string{`"maybe"`, "-on"}, "prog run --help"},
		{[]string{"run", "--port"}, nil, []string{"-port"}, "prog run --help"},
		{[]string{"run"}, map[string]string{"P_PORT": "x"}, []string{`"x"`, "$P_PORT", "--port"}, "prog run --help"},
		{[]string{"img", "nope"}, nil, []string{"img: ", `unknown command "nope"`}, "prog img --help"},
		{[]string{"img", "ls", "extra"}, nil, []string{"img ls: ", `unexpected argument "extra"`}, "prog img ls --help"},
		{[]string{"help", "img", "nope"}, nil, []string{`no help topic "nope"`}, "prog img --help"},
	} {
		a := newTestApp()
		for k, v := range tc.env {
			a.env[k] = v
		}
		err := a.run(tc.args...)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", tc.args, err)
			continue
		}
		msg := err.Error()
		for _, w := range append(tc.want, "(see '"+tc.hint+"')") {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: %q does not say %q", tc.args, msg, w)
			}
		}
		if strings.Contains(msg, "\n") || a.ran != "" {
			t.Errorf("%q: message %q (one line?), ran %q", tc.args, msg, a.ran)
		}
	}
}

func TestBeforeError(t *testing.T) {
	a := newTestApp()
	a.before["port"] = "x"
	err := a.run("run")
	if err == nil || !strings.Contains(err.Error(), `invalid value "x" for --port`) || a.ran != "" {
		t.Errorf("bad value set by Before: %v, ran %q", err, a.ran)
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		t.Errorf("Before's error became a usage error: %v", err)
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"-v", "--version"} {
		a := newTestApp()
		if err := a.run(arg); err != nil || a.out.String() != "prog version 1.2.3\n" {
			t.Errorf("%s: %v %q", arg, err, a.out.String())
		}
	}
}

func TestExitError(t *testing.T) {
	err := error(ExitError{Code: 3})
	var ee ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || err.Error() != "exit status 3" {
		t.Errorf("ExitError: %v %+v", err, ee)
	}
}
