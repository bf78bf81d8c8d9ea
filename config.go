package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// defaultConfigFile holds flag values, keyed by flag name, for server and agent.
const defaultConfigFile = "/etc/orch/config.yaml"

// configFlag names the config file; its value is read before the others.
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigFile, EnvVars: []string{"ORCH_CONFIG_FILE"},
		Usage: "YAML file whose keys are flag names (command-line flags and environment variables take precedence)"}
}

// loadConfigFile sets, from the config file, every flag the command line and
// the environment left unset. A missing default file is fine; a missing file
// named explicitly, unreadable YAML or an unknown key is an error.
func loadConfigFile(c *cli.Context) error {
	path := c.String("config")
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !c.IsSet("config") {
			return nil
		}
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]interface{}
	if err := yaml.Unmarshal(b, &values); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	known := map[string]bool{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	for key, v := range values {
		name := strings.TrimSuffix(key, "+")
		if !known[name] || name == "config" {
			return fmt.Errorf("config file %s: unknown key %q", path, key)
		}
		if c.IsSet(name) {
			continue
		}
		var items []interface{}
		switch t := v.(type) {
		case []interface{}:
			items = t
		default:
			items = []interface{}{t}
		}
		for _, it := range items {
			if err := c.Set(name, fmt.Sprint(it)); err != nil {
				return fmt.Errorf("config file %s: key %q: %w", path, key, err)
			}
		}
	}
	return nil
}
