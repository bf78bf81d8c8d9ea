// Package cli is orch's command line: a tree of commands whose flags are
// parsed with the standard library's flag package, read from environment
// variables when the command line leaves them unset, and described by help
// rendered with plain code.
//
// It exists so that no template engine is linked into orch: text/template
// calls methods by run-time name, which turns the Go linker's method
// dead-code elimination off for the whole binary (scripts/deadcode.sh).
//
// Parsing stops at the first argument that is not a flag (as the flag
// package does); what follows is a subcommand or the command's arguments.
// Values come, highest precedence first, from the command line, the
// environment (Flag.Env), Command.Before (orch's config file) and the
// default bound in the flag's Value.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Command is one command of the tree: a leaf with an Action, or a group
// with Commands (and optionally flags shared by them).
type Command struct {
	// Name is what selects the command; Aliases select it too.
	Name    string
	Aliases []string
	// Usage is the one-line summary; Description, if any, the longer text
	// of its help.
	Usage       string
	Description string
	// ArgsUsage names the arguments after the flags (IMAGE...). A leaf
	// without it takes no arguments.
	ArgsUsage string
	// Flags are the command's options.
	Flags []*Flag
	// Commands are the subcommands; a group without an Action shows its
	// help when none is named.
	Commands []*Command
	// Raw passes every argument after the command's name to Action as it
	// is: no flags are parsed, not even --help.
	Raw bool
	// Before runs once the command line and the environment are parsed,
	// before the subcommand or Action: it may set the flags they left
	// unset (see Set).
	Before func(s *Set) error
	// Action runs the command with the arguments left after the flags.
	Action func(ctx context.Context, args []string) error
}

// names is the command's name followed by its aliases.
func (c *Command) names() []string {
	return append([]string{c.Name}, c.Aliases...)
}

// find returns the subcommand named (or aliased) name, or nil.
func (c *Command) find(name string) *Command {
	for _, sub := range c.Commands {
		for _, n := range sub.names() {
			if n == name {
				return sub
			}
		}
	}
	return nil
}

// App is the root of the command tree.
type App struct {
	// Name is the program's name (orch).
	Name string
	// Usage is its one-line summary.
	Usage string
	// Version is printed by --version (-v).
	Version string
	// Commands are the top-level commands.
	Commands []*Command
	// Stdout receives help and version output.
	Stdout io.Writer
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)
}

// UsageError is a command line orch cannot run: an unknown command or
// flag, a bad value, an unexpected argument.
type UsageError struct {
	// Command is the command's path, "orch server".
	Command string
	// Err says what is wrong.
	Err error
}

// Error is one line: what is wrong, in which command, and where help is.
func (e *UsageError) Error() string {
	where := strings.TrimPrefix(strings.TrimPrefix(e.Command, rootName(e.Command)), " ")
	if where != "" {
		where += ": "
	}
	return fmt.Sprintf("%s%v (see '%s --help')", where, e.Err, e.Command)
}

// Unwrap returns Err.
func (e *UsageError) Unwrap() error { return e.Err }

func rootName(path string) string {
	name, _, _ := strings.Cut(path, " ")
	return name
}

// ExitError asks the program to exit with Code without printing anything
// more (the command has said what went wrong).
type ExitError struct {
	// Code is the exit status.
	Code int
}

// Error says which status was asked for.
func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run runs the command that args (without the program's name) select.
// Help and version requests print to Stdout and return nil; a command
// line that cannot run returns a *UsageError.
func (a *App) Run(ctx context.Context, args []string) error {
	root := a.root()
	if len(args) == 0 {
		return a.help([]*Command{root})
	}
	switch args[0] {
	case "-v", "--v", "-version", "--version":
		_, err := fmt.Fprintf(a.stdout(), "%s version %s\n", a.Name, a.Version)
		return err
	}
	return a.run(ctx, []*Command{root}, args)
}

// root is the App as a command: its flags are --help and --version, which
// Run handles itself.
func (a *App) root() *Command {
	return &Command{Name: a.Name, Usage: a.Usage, Commands: a.Commands}
}

func (a *App) stdout() io.Writer {
	if a.Stdout == nil {
		return os.Stdout
	}
	return a.Stdout
}

func (a *App) lookupEnv(name string) (string, bool) {
	if a.LookupEnv == nil {
		return os.LookupEnv(name)
	}
	return a.LookupEnv(name)
}

// pathName is the command path as the user types it, "orch image ls".
func pathName(path []*Command) string {
	names := make([]string, len(path))
	for i, c := range path {
		names[i] = c.Name
	}
	return strings.Join(names, " ")
}

// run parses args for the last command of path and runs it or the
// subcommand they name.
func (a *App) run(ctx context.Context, path []*Command, args []string) error {
	c := path[len(path)-1]
	if c.Raw {
		return c.Action(ctx, args)
	}
	set, rest, err := a.parse(c, args)
	if errors.Is(err, flag.ErrHelp) {
		return a.help(path)
	}
	if err != nil {
		return &UsageError{Command: pathName(path), Err: err}
	}
	if c.Before != nil {
		if err := c.Before(set); err != nil {
			return err
		}
	}
	if len(c.Commands) > 0 && (len(rest) > 0 || c.Action == nil) {
		if len(rest) == 0 {
			return a.help(path)
		}
		if rest[0] == "help" || rest[0] == "h" {
			return a.helpTopic(path, rest[1:])
		}
		sub := c.find(rest[0])
		if sub == nil {
			return &UsageError{Command: pathName(path), Err: fmt.Errorf("unknown command %q", rest[0])}
		}
		return a.run(ctx, append(path, sub), rest[1:])
	}
	if len(rest) > 0 && c.ArgsUsage == "" {
		return &UsageError{Command: pathName(path), Err: fmt.Errorf("unexpected argument %q (flags go before arguments)", rest[0])}
	}
	return c.Action(ctx, rest)
}

// parse sets c's flags from the command line, then the ones it left unset
// from the environment, and returns the arguments after the flags.
func (a *App) parse(c *Command, args []string) (*Set, []string, error) {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	set := &Set{flags: c.Flags, set: map[*Flag]bool{}}
	for _, f := range c.Flags {
		for _, n := range f.Names() {
			if fs.Lookup(n) != nil {
				return nil, nil, fmt.Errorf("flag -%s defined twice", n)
			}
			fs.Var(f.Value, n, f.Usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	fs.Visit(func(ff *flag.Flag) { set.set[set.lookup(ff.Name)] = true })
	for _, f := range c.Flags {
		if set.set[f] {
			continue
		}
		for _, env := range f.Env {
			s, ok := a.lookupEnv(env)
			if !ok {
				continue
			}
			isSet, err := f.Value.fromEnv(s)
			if err != nil {
				return nil, nil, fmt.Errorf("invalid value %q for $%s (--%s): %w", s, env, f.Name, err)
			}
			set.set[f] = isSet
			break
		}
	}
	return set, fs.Args(), nil
}
