package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/orch-dev/orch/internal/cli"
)

// flagSpec is the user-visible contract of one flag: its aliases, the
// environment variable it is read from ("" for none), its default as the
// flag's value prints it, and a sample value (several items for a
// repeatable flag).
type flagSpec struct {
	aliases []string
	env     string
	def     string
	sample  []string
}

// serverFlagSpecs are `orch server`'s flags (config aside, tested on its
// own).
var serverFlagSpecs = map[string]flagSpec{
	"data-dir":                               {[]string{"d"}, "ORCH_DATA_DIR", "/var/lib/orch", []string{"/x/data"}},
	"bind-address":                           {nil, "ORCH_BIND_ADDRESS", "", []string{"127.0.0.2"}},
	"https-listen-port":                      {nil, "ORCH_HTTPS_LISTEN_PORT", "6443", []string{"7443"}},
	"advertise-address":                      {nil, "ORCH_ADVERTISE_ADDRESS", "", []string{"10.0.0.2"}},
	"node-name":                              {nil, "ORCH_NODE_NAME", "", []string{"n1"}},
	"node-ip":                                {nil, "ORCH_NODE_IP", "", []string{"10.0.0.1", "fd00::1"}},
	"node-label":                             {nil, "ORCH_NODE_LABEL", "", []string{"a=b", "example.com/c=d"}},
	"node-taint":                             {nil, "ORCH_NODE_TAINT", "", []string{"k=v:NoSchedule", "edge:NoExecute"}},
	"token":                                  {[]string{"t"}, "ORCH_TOKEN", "", []string{"secret"}},
	"write-kubeconfig":                       {[]string{"o"}, "ORCH_WRITE_KUBECONFIG", "/etc/orch/orch.yaml", []string{"/x/admin.yaml"}},
	"write-kubeconfig-mode":                  {nil, "ORCH_WRITE_KUBECONFIG_MODE", "0600", []string{"0644"}},
	"cluster-cidr":                           {nil, "ORCH_CLUSTER_CIDR", "10.42.0.0/16", []string{"10.50.0.0/16"}},
	"service-cidr":                           {nil, "ORCH_SERVICE_CIDR", "10.43.0.0/16", []string{"10.60.0.0/16"}},
	"cluster-dns":                            {nil, "ORCH_CLUSTER_DNS", "10.43.0.10", []string{"10.60.0.10"}},
	"service-node-port-range":                {nil, "ORCH_SERVICE_NODE_PORT_RANGE", "30000-32767", []string{"31000-31999"}},
	"tls-san":                                {nil, "ORCH_TLS_SAN", "", []string{"a.example", "10.1.1.1"}},
	"disable-agent":                          {nil, "ORCH_DISABLE_AGENT", "false", []string{"true"}},
	"disable-pod-fast-path":                  {nil, "ORCH_DISABLE_POD_FAST_PATH", "false", []string{"true"}},
	"cgroup-root":                            {nil, "ORCH_CGROUP_ROOT", "/orch", []string{"/o2"}},
	"default-not-ready-toleration-seconds":   {nil, "ORCH_DEFAULT_NOT_READY_TOLERATION_SECONDS", "300", []string{"10"}},
	"default-unreachable-toleration-seconds": {nil, "ORCH_DEFAULT_UNREACHABLE_TOLERATION_SECONDS", "300", []string{"20"}},
	"resolv-conf":                            {nil, "ORCH_RESOLV_CONF", "/etc/resolv.conf", []string{"/x/resolv.conf"}},
	"log-level":                              {nil, "ORCH_LOG_LEVEL", "info", []string{"debug"}},
	"enable-pprof":                           {nil, "ORCH_ENABLE_PPROF", "false", []string{"true"}},
}

// agentFlagSpecs are `orch agent`'s flags (config aside).
var agentFlagSpecs = map[string]flagSpec{
	"server":                {[]string{"s"}, "ORCH_URL", "", []string{"https://10.0.0.1:6443"}},
	"token":                 {[]string{"t"}, "ORCH_TOKEN", "", []string{"K10abc::server:secret"}},
	"token-file":            {nil, "ORCH_TOKEN_FILE", "", []string{"/x/token"}},
	"data-dir":              {[]string{"d"}, "ORCH_DATA_DIR", "/var/lib/orch", []string{"/x/data"}},
	"node-name":             {nil, "ORCH_NODE_NAME", "", []string{"n2"}},
	"node-ip":               {nil, "ORCH_NODE_IP", "", []string{"10.0.0.3"}},
	"node-label":            {nil, "ORCH_NODE_LABEL", "", []string{"a=b", "example.com/c=d"}},
	"node-taint":            {nil, "ORCH_NODE_TAINT", "", []string{"k=v:NoSchedule", "edge:NoExecute"}},
	"cgroup-root":           {nil, "ORCH_CGROUP_ROOT", "/orch", []string{"/o2"}},
	"cluster-cidr":          {nil, "ORCH_CLUSTER_CIDR", "10.42.0.0/16", []string{"10.50.0.0/16"}},
	"flannel-backend":       {nil, "ORCH_FLANNEL_BACKEND", "vxlan", []string{"host-gw"}},
	"disable-pod-fast-path": {nil, "ORCH_DISABLE_POD_FAST_PATH", "false", []string{"true"}},
	"cluster-dns":           {nil, "ORCH_CLUSTER_DNS", "10.43.0.10", []string{"10.60.0.10"}},
	"resolv-conf":           {nil, "ORCH_RESOLV_CONF", "/etc/resolv.conf", []string{"/x/resolv.conf"}},
	"cluster-domain":        {nil, "ORCH_CLUSTER_DOMAIN", "cluster.local", []string{"edge.local"}},
	"private-registry":      {nil, "ORCH_PRIVATE_REGISTRY", "/etc/orch/registries.yaml", []string{"/x/registries.yaml"}},
	"log-level":             {nil, "ORCH_LOG_LEVEL", "info", []string{"warn"}},
}

// otherFlagSpecs are the flags of the commands without environment
// variables or config file, by command path.
var otherFlagSpecs = map[string]map[string]flagSpec{
	"check-config": {
		"port":     {nil, "", "", []string{"7443/tcp", "8472/udp"}},
		"no-probe": {nil, "", "false", []string{"true"}},
	},
	"image":        {"data-dir": {nil, "", "/var/lib/orch", []string{"/x/data"}}},
	"image pull":   {"data-dir": {nil, "", "/var/lib/orch", []string{"/x/data"}}, "registries": {nil, "", "/etc/orch/registries.yaml", []string{"/x/r.yaml"}}},
	"image import": {"data-dir": {nil, "", "/var/lib/orch", []string{"/x/data"}}},
	"image ls": {
		"data-dir": {nil, "", "/var/lib/orch", []string{"/x/data"}},
		"quiet":    {[]string{"q"}, "", "false", []string{"true"}},
		"digests":  {nil, "", "false", []string{"true"}},
	},
	"image rm": {"data-dir": {nil, "", "/var/lib/orch", []string{"/x/data"}}},
}

// isBool reports whether a spec is a boolean flag's (given without value).
func (s flagSpec) isBool() bool { return s.def == "false" || s.def == "true" }

// parsed runs args with every command's Action replaced: only the flags
// are parsed (command line, environment, config file). It returns the
// flags of the command the leading words of args name.
func parsed(t *testing.T, env map[string]string, args ...string) (map[string]*cli.Flag, error) {
	t.Helper()
	app := newApp(io.Discard, io.Discard)
	app.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ran := false
	var stub func(cmds []*cli.Command)
	stub = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Action != nil {
				c.Action = func(context.Context, []string) error { ran = true; return nil }
			}
			stub(c.Commands)
		}
	}
	stub(app.Commands)
	var cmd *cli.Command
	for cmds, words := app.Commands, args; len(words) > 0 && cmds != nil; words = words[1:] {
		next := cmd
		for _, c := range cmds {
			if c.Name == words[0] {
				next = c
			}
		}
		if next == cmd {
			break // flags: the command is named
		}
		cmd, cmds = next, next.Commands
	}
	if cmd == nil {
		t.Fatalf("%q names no command", args)
	}
	err := app.Run(context.Background(), args)
	if err == nil && !ran {
		t.Fatalf("%q: no command ran", args)
	}
	flags := map[string]*cli.Flag{}
	for _, f := range cmd.Flags {
		flags[f.Name] = f
	}
	return flags, err
}

// dash is how a flag is named on the command line: -d, --data-dir.
func dash(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// writeConfig writes a config file setting key to the sample (a list for
// several items) and returns its path.
func writeConfig(t *testing.T, key string, spec flagSpec) string {
	t.Helper()
	var b strings.Builder
	switch {
	case len(spec.sample) > 1:
		fmt.Fprintf(&b, "%s:\n", key)
		for _, s := range spec.sample {
			fmt.Fprintf(&b, "  - %q\n", s)
		}
	case spec.isBool():
		fmt.Fprintf(&b, "%s: %s\n", key, spec.sample[0])
	default:
		fmt.Fprintf(&b, "%s: %q\n", key, spec.sample[0])
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkFlags checks that the command's flags are exactly specs (and
// config when withConfig), with their aliases and environment variables,
// and that each holds its default but want[name], which holds value.
func checkFlags(t *testing.T, what string, flags map[string]*cli.Flag, specs map[string]flagSpec, withConfig bool, name, value string) {
	t.Helper()
	var got, exp []string
	for n := range flags {
		got = append(got, n)
	}
	for n := range specs {
		exp = append(exp, n)
	}
	if withConfig {
		exp = append(exp, "config")
	}
	sort.Strings(got)
	sort.Strings(exp)
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("%s: flags %q, want %q", what, got, exp)
	}
	for n, spec := range specs {
		f := flags[n]
		var env []string
		if spec.env != "" {
			env = []string{spec.env}
		}
		if !reflect.DeepEqual(f.Aliases, spec.aliases) && len(f.Aliases)+len(spec.aliases) > 0 || !reflect.DeepEqual(f.Env, env) {
			t.Errorf("%s: --%s has aliases %q and env %q, want %q and %q", what, n, f.Aliases, f.Env, spec.aliases, env)
		}
		want := spec.def
		if n == name {
			want = value
		}
		if f.Value.String() != want {
			t.Errorf("%s: --%s = %q, want %q", what, n, f.Value.String(), want)
		}
	}
}

func TestFlagsFromEachSource(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for cmd, specs := range map[string]map[string]flagSpec{"server": serverFlagSpecs, "agent": agentFlagSpecs} {
		flags, err := parsed(t, nil, cmd, "--config", empty)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if f := flags["config"]; f == nil || !reflect.DeepEqual(f.Aliases, []string{"c"}) || !reflect.DeepEqual(f.Env, []string{"ORCH_CONFIG_FILE"}) ||
			f.Value.String() != empty {
			t.Errorf("%s: --config is %+v", cmd, f)
		}
		for name, spec := range specs {
			want := strings.Join(spec.sample, ",")
			for _, n := range append([]string{name}, spec.aliases...) {
				// Command line, by name and alias; repeated for lists.
				args := []string{cmd, "--config", empty}
				for _, s := range spec.sample {
					if spec.isBool() {
						args = append(args, dash(n))
					} else {
						args = append(args, dash(n), s)
					}
				}
				flags, err := parsed(t, nil, args...)
				if err != nil {
					t.Errorf("%q: %v", args, err)
					continue
				}
				checkFlags(t, fmt.Sprintf("%q", args), flags, specs, true, name, want)

				// Config file (named by $ORCH_CONFIG_FILE), by name and alias.
				flags, err = parsed(t, map[string]string{"ORCH_CONFIG_FILE": writeConfig(t, n, spec)}, cmd)
				if err != nil {
					t.Errorf("%s: config key %q: %v", cmd, n, err)
					continue
				}
				checkFlags(t, fmt.Sprintf("%s: config key %q", cmd, n), flags, specs, true, name, want)
			}
			// Environment (lists comma-separated).
			flags, err := parsed(t, map[string]string{spec.env: want}, cmd, "-c", empty)
			if err != nil {
				t.Errorf("%s: $%s: %v", cmd, spec.env, err)
				continue
			}
			checkFlags(t, fmt.Sprintf("%s: $%s", cmd, spec.env), flags, specs, true, name, want)
		}
	}
	for path, specs := range otherFlagSpecs {
		for name, spec := range specs {
			for _, n := range append([]string{name}, spec.aliases...) {
				var flagArgs []string
				for _, s := range spec.sample {
					if spec.isBool() {
						flagArgs = append(flagArgs, dash(n))
					} else {
						flagArgs = append(flagArgs, dash(n)+"="+s)
					}
				}
				words := strings.Fields(path)
				args := append(words[:len(words):len(words)], flagArgs...)
				switch {
				case path == "image":
					args = append(args, "ls") // a group's flags come before its subcommand
				case len(words) == 2 && words[1] != "ls":
					args = append(args, "ARG")
				}
				flags, err := parsed(t, nil, args...)
				if err != nil {
					t.Errorf("%q: %v", args, err)
					continue
				}
				checkFlags(t, fmt.Sprintf("%q", args), flags, specs, false, name, strings.Join(spec.sample, ","))
			}
		}
	}
}

// TestPrecedence checks flag > environment > config file > default, and
// that the values reach server.Config.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("data-dir: /from/file\ntoken: file-token\nhttps-listen-port: 7443\n"+
		"tls-san: [file.example]\nnode-ip: [10.9.9.9]\nwrite-kubeconfig-mode: \"0644\"\ndisable-agent: true\nnode-name: File-Node\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := newApp(io.Discard, io.Discard)
	app.LookupEnv = func(k string) (string, bool) {
		v, ok := map[string]string{"ORCH_CONFIG_FILE": config, "ORCH_TOKEN": "env-token", "ORCH_TLS_SAN": "env1.example, env2.example",
			"ORCH_DATA_DIR": "/from/env"}[k]
		return v, ok
	}
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.Name == "server" {
			cmd = c
		}
	}
	var got []string
	cmd.Action = func(context.Context, []string) error {
		for _, f := range cmd.Flags {
			got = append(got, f.Name+"="+f.Value.String())
		}
		return nil
	}
	if err := app.Run(context.Background(), []string{"server", "-d", "/from/flag", "--node-ip", "10.1.1.1", "--node-ip=10.1.1.2"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data-dir=/from/flag", "token=env-token", "https-listen-port=7443", "tls-san=env1.example,env2.example",
		"node-ip=10.1.1.1,10.1.1.2", "cluster-cidr=10.42.0.0/16", "disable-agent=true"} {
		if !containsString(got, want) {
			t.Errorf("want %s in %q", want, got)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestServerConfig(t *testing.T) {
	o := &serverOptions{}
	o.flags()
	o.dataDir, o.nodeName, o.nodeIPs, o.writeKubeconfigMode, o.nodePortRange = "/d", "Node-A", []string{"10.0.0.1"}, "0644", "31000-31999"
	o.nodeLabels, o.nodeTaints = []string{"role=edge"}, []string{"dedicated=db:NoSchedule"}
	cfg, err := serverConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeLabels["role"] != "edge" || len(cfg.NodeTaints) != 1 || cfg.NodeTaints[0].Key != "dedicated" ||
		cfg.NodeTaints[0].Value != "db" || cfg.NodeTaints[0].Effect != "NoSchedule" {
		t.Errorf("server node labels %v, taints %v", cfg.NodeLabels, cfg.NodeTaints)
	}
	if cfg.DataDir != "/d" || cfg.NodeName != "node-a" || cfg.HTTPSPort != 6443 || cfg.WriteKubeconfigMode != 0o644 ||
		cfg.NodePortMin != 31000 || cfg.NodePortMax != 31999 || cfg.ClusterCIDR != netip.MustParsePrefix("10.42.0.0/16") ||
		cfg.ClusterDNS != netip.MustParseAddr("10.43.0.10") || len(cfg.NodeIPs) != 1 || cfg.BindAddress.IsValid() {
		t.Errorf("server config: %+v", cfg)
	}
	for _, bad := range []func(o *serverOptions){
		func(o *serverOptions) { o.writeKubeconfigMode = "0999" },
		func(o *serverOptions) { o.nodePortRange = "30000" },
		func(o *serverOptions) { o.clusterCIDR = "10.42.0.1/16" },
		func(o *serverOptions) { o.bindAddress = "nope" },
		func(o *serverOptions) { o.nodeIPs = []string{""} },
		func(o *serverOptions) { o.nodeLabels = []string{"no-equals"} },
		func(o *serverOptions) { o.nodeTaints = []string{"k=v:Sometimes"} },
	} {
		o := &serverOptions{}
		o.flags()
		o.nodeName = "n"
		bad(o)
		if _, err := serverConfig(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestAgentConfig(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("K10x::server:y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &agentOptions{}
	o.flags()
	o.server, o.tokenFile, o.nodeName, o.nodeIPs = "https://10.0.0.1:6443", tokenFile, "N2", []string{"10.0.0.3"}
	o.nodeLabels, o.nodeTaints = []string{"a=b"}, []string{"k=v:NoSchedule"}
	cfg, join, err := agentConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	if join.Token != "K10x::server:y" || join.ServerURL != o.server || cfg.NodeName != "n2" || cfg.Labels["a"] != "b" || len(cfg.Taints) != 1 ||
		cfg.ClusterDomain != "cluster.local" || cfg.DataDir != "/var/lib/orch" {
		t.Errorf("agent config: %+v %+v", cfg, join)
	}
	netCfg, err := podnetConfig(o, cfg)
	if err != nil || netCfg.Backend != "vxlan" || netCfg.NodeIP != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("podnet config: %+v %v", netCfg, err)
	}
	o.server = ""
	if _, _, err := agentConfig(o); err == nil || !strings.Contains(err.Error(), "--server (ORCH_URL) is required") {
		t.Errorf("no --server: %v", err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"bogus: 1\n", `unknown key "bogus"`},
		{"config: /x\n", `unknown key "config"`},
		{"https-listen-port: many\n", `key "https-listen-port": invalid value "many" for --https-listen-port`},
		{"data-dir: [\n", "config file"},
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := parsed(t, nil, "server", "--config", path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := os.Stat(defaultConfigFile); os.IsNotExist(err) {
		if _, err := parsed(t, nil, "agent"); err != nil {
			t.Errorf("no %s: %v", defaultConfigFile, err)
		}
	}
}

// TestRun checks exit statuses and messages of the whole command line.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"version"}, 0, "orch version dev\n", ""},
		{[]string{"--version"}, 0, "orch version dev\n", ""},
		{[]string{"-v"}, 0, "orch version dev\n", ""},
		{[]string{"--help"}, 0, "COMMANDS:", ""},
		{[]string{"server", "-h"}, 0, "--data-dir value, -d value", ""},
		{[]string{"frobnicate"}, 1, "", "orch: unknown command \"frobnicate\" (see 'orch --help')\n"},
		{[]string{"server", "--no-such-flag"}, 1, "", "orch: server: flag provided but not defined: -no-such-flag (see 'orch server --help')\n"},
		{[]string{"agent", "--node-ip"}, 1, "", "orch: agent: flag needs an argument: -node-ip (see 'orch agent --help')\n"},
		{[]string{"server", "--https-listen-port", "http"}, 1, "", "orch: server: invalid value \"http\" for flag -https-listen-port: not an integer (see 'orch server --help')\n"},
		{[]string{"server", "stray"}, 1, "", "orch: server: unexpected argument \"stray\" (flags go before arguments) (see 'orch server --help')\n"},
		{[]string{"image", "pull"}, 1, "", "orch: image pull: at least one argument required (see --help)\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || stderr.String() != tc.stderr {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
}

// TestScriptCommandLines parses the command lines that scripts/ and e2e/
// run orch with.
func TestScriptCommandLines(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		// e2e/cluster_test.go and e2e/deck_test.go
		{"server", "--data-dir", "/d", "--node-name", "h0", "--write-kubeconfig", "/a/admin.yaml", "--cgroup-root", "/lab-h0", "--resolv-conf", "/a/resolv.conf",
			"--default-not-ready-toleration-seconds", "10", "--default-unreachable-toleration-seconds", "10"},
		{"agent", "--server", "https://10.0.0.1:6443", "--token", "K10x::server:y", "--data-dir", "/d", "--node-name", "h1", "--cgroup-root", "/lab-h1",
			"--resolv-conf", "/a/resolv.conf"},
		// scripts/bench-api.sh and scripts/idle-memory.sh
		{"server", "--disable-agent", "--data-dir", "/w/data", "--node-name", "bench", "--write-kubeconfig", "/w/admin.yaml", "--resolv-conf", "/w/resolv.conf",
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--node-ip", "127.0.0.1"},
		{"agent", "--server", "https://10.1.0.10:6443", "--token", "t", "--data-dir", "/d/agt", "--node-name", "agt", "--cgroup-root", "/x-agt",
			"--resolv-conf", "/d/resolv.conf", "--node-ip", "10.1.0.11", "--log-level", "warn"},
		// scripts/install_test.go's units
		{"server", "--disable-agent", "--tls-san=edge%1"},
		{"agent", "--node-label", "role=edge"},
	} {
		if _, err := parsed(t, map[string]string{"ORCH_CONFIG_FILE": empty}, args...); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}
