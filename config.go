package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/orch-dev/orch/internal/cli"
)

// defaultConfigFile holds flag values, keyed by flag name, for server and agent.
const defaultConfigFile = "/etc/orch/config.yaml"

// configFlag names the config file; its value is read before the others.
func configFlag(p *string) *cli.Flag {
	return &cli.Flag{Name: "config", Aliases: []string{"c"}, Value: cli.String(p, defaultConfigFile), Env: []string{"ORCH_CONFIG_FILE"},
		Usage: "YAML file whose keys are flag names (command-line flags and environment variables take precedence)"}
}

// loadConfigFile sets, from the config file at path, every flag the command
// line and the environment left unset. A missing default file is fine; a
// missing file named explicitly, unreadable YAML or an unknown key is an
// error. A key may be a flag's name or alias; a list sets a repeatable flag
// once per item.
func loadConfigFile(s *cli.Set, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !s.IsSet("config") {
			return nil
		}
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]interface{}
	if err := yaml.Unmarshal(b, &values); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for key, v := range values {
		name := strings.TrimSuffix(key, "+")
		if !s.Has(name) || name == "config" || name == "c" {
			return fmt.Errorf("config file %s: unknown key %q", path, key)
		}
		if s.IsSet(name) {
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
			if err := s.Set(name, fmt.Sprint(it)); err != nil {
				return fmt.Errorf("config file %s: key %q: %w", path, key, err)
			}
		}
	}
	return nil
}
