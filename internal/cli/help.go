package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// helpTopic prints the help of the command that topic (names below the
// last command of path) selects: `orch help image ls`.
func (a *App) helpTopic(path []*Command, topic []string) error {
	for _, name := range topic {
		sub := path[len(path)-1].find(name)
		if sub == nil {
			return &UsageError{Command: pathName(path), Err: fmt.Errorf("no help topic %q", name)}
		}
		path = append(path, sub)
	}
	return a.help(path)
}

// help prints the help of the last command of path to Stdout.
func (a *App) help(path []*Command) error {
	return writeHelp(a.stdout(), path, a.Version)
}

// writeHelp renders a command's help: name and summary, usage line,
// description, subcommands and flags with their defaults and environment
// variables. The first command of path is the root, whose version is
// shown and whose flags are --help and --version.
func writeHelp(w io.Writer, path []*Command, version string) error {
	c := path[len(path)-1]
	isRoot := len(path) == 1
	name := pathName(path)
	var b strings.Builder
	b.WriteString("NAME:\n   " + name)
	if c.Usage != "" {
		b.WriteString(" - " + c.Usage)
	}
	b.WriteString("\n\nUSAGE:\n   " + name)
	switch {
	case isRoot:
		b.WriteString(" [global options] command [command options]")
	case len(c.Commands) > 0:
		b.WriteString(" [options] command [command options]")
	case c.Raw:
		b.WriteString(" " + c.ArgsUsage)
	default:
		b.WriteString(" [options]")
		if c.ArgsUsage != "" {
			b.WriteString(" " + c.ArgsUsage)
		}
	}
	b.WriteString("\n")
	if isRoot && version != "" {
		b.WriteString("\nVERSION:\n   " + version + "\n")
	}
	if c.Description != "" {
		b.WriteString("\nDESCRIPTION:\n")
		for _, line := range strings.Split(c.Description, "\n") {
			b.WriteString("   " + line + "\n")
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if len(c.Commands) > 0 {
		if _, err := io.WriteString(w, "\nCOMMANDS:\n"); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		for _, sub := range c.Commands {
			fmt.Fprintf(tw, "   %s\t%s\n", strings.Join(sub.names(), ", "), sub.Usage)
		}
		fmt.Fprintf(tw, "   help, h\tshow the commands, or one command's help\n")
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if c.Raw {
		return nil // every argument, --help too, is the command's own
	}
	heading := "\nOPTIONS:\n"
	if isRoot {
		heading = "\nGLOBAL OPTIONS:\n"
	}
	if _, err := io.WriteString(w, heading); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, f := range c.Flags {
		fmt.Fprintf(tw, "   %s\t%s\n", flagNames(f), flagUsage(f))
	}
	fmt.Fprintf(tw, "   --help, -h\tshow help\n")
	if isRoot {
		fmt.Fprintf(tw, "   --version, -v\tprint the version\n")
	}
	return tw.Flush()
}

// flagNames is a flag's help column: "--data-dir value, -d value", and
// for a repeatable one "--node-ip value [ --node-ip value ]".
func flagNames(f *Flag) string {
	names := make([]string, 0, 1+len(f.Aliases))
	for _, n := range f.Names() {
		dash := "--"
		if len(n) == 1 {
			dash = "-"
		}
		s := dash + n
		if f.Value.takesArg() {
			s += " value"
		}
		names = append(names, s)
	}
	s := strings.Join(names, ", ")
	if f.Value.repeatable() {
		s += " [ " + names[0] + " ]"
	}
	return s
}

// flagUsage is a flag's usage with its default and environment variables:
// "folder for state (default: "/var/lib/orch") [$ORCH_DATA_DIR]".
func flagUsage(f *Flag) string {
	s := f.Usage
	if d := f.Value.defaultText(); d != "" {
		s += " (default: " + d + ")"
	}
	if len(f.Env) > 0 {
		s += " [$" + strings.Join(f.Env, ", $") + "]"
	}
	return s
}
