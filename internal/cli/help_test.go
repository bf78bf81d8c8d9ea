package cli

import (
	"strings"
	"testing"
)

func TestHelpRequests(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the NAME line
	}{
		{nil, "prog - a test program"},
		{[]string{"-h"}, "prog - a test program"},
		{[]string{"--help"}, "prog - a test program"},
		{[]string{"help"}, "prog - a test program"},
		{[]string{"h"}, "prog - a test program"},
		{[]string{"help", "run"}, "prog run - run something"},
		{[]string{"run", "--help"}, "prog run - run something"},
		{[]string{"r", "-h"}, "prog run - run something"},
		{[]string{"run", "--port", "1", "-help"}, "prog run - run something"},
		{[]string{"img"}, "prog img - images"},
		{[]string{"img", "--dir", "/x"}, "prog img - images"},
		{[]string{"img", "help"}, "prog img - images"},
		{[]string{"img", "help", "list"}, "prog img ls - list them"},
		{[]string{"img", "ls", "-h"}, "prog img ls - list them"},
		{[]string{"help", "img", "rm"}, "prog img rm - remove them"},
	} {
		a := newTestApp()
		if err := a.run(tc.args...); err != nil || a.ran != "" {
			t.Errorf("%q: %v, ran %q", tc.args, err, a.ran)
			continue
		}
		if !strings.HasPrefix(a.out.String(), "NAME:\n   "+tc.want+"\n") {
			t.Errorf("%q: help is\n%s\nwant NAME %q", tc.args, a.out.String(), tc.want)
		}
	}
}

// helpLine returns the line of help that starts (after indentation) with
// prefix.
func helpLine(help, prefix string) string {
	for _, l := range strings.Split(help, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return l
		}
	}
	return ""
}

func TestHelpText(t *testing.T) {
	a := newTestApp()
	if err := a.run("--help"); err != nil {
		t.Fatal(err)
	}
	root := a.out.String()
	for _, want := range []string{"USAGE:\n   prog [global options] command [command options]\n", "VERSION:\n   1.2.3\n", "GLOBAL OPTIONS:\n"} {
		if !strings.Contains(root, want) {
			t.Errorf("root help lacks %q:\n%s", want, root)
		}
	}
	for prefix, want := range map[string]string{"run, r": "run something", "img": "images", "raw": "pass everything on", "help, h": "help", "--help, -h": "show help", "--version, -v": "print the version"} {
		if l := helpLine(root, prefix); !strings.HasSuffix(l, want) {
			t.Errorf("root help: line %q, want it to end in %q:\n%s", l, want, root)
		}
	}

	a = newTestApp()
	if err := a.run("run", "-h"); err != nil {
		t.Fatal(err)
	}
	run := a.out.String()
	if !strings.Contains(run, "USAGE:\n   prog run [options] THING...\n") || strings.Contains(run, "VERSION") || strings.Contains(run, "COMMANDS") {
		t.Errorf("run's help:\n%s", run)
	}
	// Each flag: its names, usage, default and environment variables.
	for prefix, want := range map[string]string{
		"--name value, -n value":        `the name (default: "def") [$P_NAME, $P_NAME2]`,
		"--port value":                  "the port (default: 80) [$P_PORT]",
		"--big value":                   "a big number (default: 1099511627776) [$P_BIG]",
		"--on ":                         "switch it on (default: false) [$P_ON]",
		"--item value [ --item value ]": `an item (default: "x") [$P_ITEM]`,
		"--help, -h":                    "show help",
	} {
		l := helpLine(run, prefix)
		if !strings.HasSuffix(l, want) {
			t.Errorf("run's help: line %q, want it to end in %q:\n%s", l, want, run)
		}
	}
	// The usage column is aligned.
	if i, j := strings.Index(helpLine(run, "--port"), "the port"), strings.Index(helpLine(run, "--item"), "an item"); i != j || i < 0 {
		t.Errorf("usage columns at %d and %d:\n%s", i, j, run)
	}

	a = newTestApp()
	if err := a.run("img"); err != nil {
		t.Fatal(err)
	}
	img := a.out.String()
	if !strings.Contains(img, "USAGE:\n   prog img [options] command [command options]\n") || !strings.HasSuffix(helpLine(img, "ls, list"), "list them") ||
		!strings.HasSuffix(helpLine(img, "--dir value"), `a directory (default: "/var")`) {
		t.Errorf("img's help:\n%s", img)
	}
}

func TestHelpRaw(t *testing.T) {
	a := newTestApp()
	a.app.Commands[2].ArgsUsage = "ARGS..."
	if err := a.run("help", "raw"); err != nil {
		t.Fatal(err)
	}
	if got := a.out.String(); got != "NAME:\n   prog raw - pass everything on\n\nUSAGE:\n   prog raw ARGS...\n" {
		t.Errorf("raw command's help:\n%s", got)
	}
}

func TestHelpDescription(t *testing.T) {
	var b strings.Builder
	c := &Command{Name: "check", Usage: "check it", Description: "Line one.\nLine two."}
	if err := writeHelp(&b, []*Command{{Name: "prog"}, c}, "1"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "DESCRIPTION:\n   Line one.\n   Line two.\n") {
		t.Errorf("description:\n%s", b.String())
	}
}
