package checkconfig

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelConfig maps CONFIG_ options (without the prefix) to y, m or a value.
type kernelConfig map[string]string

func (kc kernelConfig) get(option string) string {
	return kc[strings.TrimPrefix(option, "CONFIG_")]
}

// readKernelConfig reads a kernel configuration file, gzipped or not.
func readKernelConfig(path string) (kernelConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader = bytes.NewReader(b)
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	return parseKernelConfig(r)
}

// parseKernelConfig parses "CONFIG_X=y" lines; "# CONFIG_X is not set"
// records "n".
func parseKernelConfig(r io.Reader) (kernelConfig, error) {
	kc := kernelConfig{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# CONFIG_"); ok {
			if name, ok := strings.CutSuffix(rest, " is not set"); ok {
				kc[name] = "n"
			}
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(name, "CONFIG_") {
			continue
		}
		kc[strings.TrimPrefix(name, "CONFIG_")] = strings.Trim(value, `"`)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kernel configuration: %w", err)
	}
	if len(kc) == 0 {
		return nil, fmt.Errorf("no CONFIG_ options found")
	}
	return kc, nil
}

// kernelVersion parses the leading "major.minor[.patch]" of a release.
func kernelVersion(release string) (major, minor int, err error) {
	f := strings.FieldsFunc(release, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("kernel release %q is not major.minor", release)
	}
	if major, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: %w", release, err)
	}
	if minor, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: %w", release, err)
	}
	return major, minor, nil
}

func unameRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// cgroupV1 is a line of /proc/cgroups.
type cgroupV1 struct {
	hierarchy int
	enabled   bool
}

// parseProcCgroups parses /proc/cgroups: "#subsys_name hierarchy
// num_cgroups enabled".
func parseProcCgroups(r io.Reader) (map[string]cgroupV1, error) {
	out := map[string]cgroupV1{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("/proc/cgroups line %q: want 4 fields", line)
		}
		h, err1 := strconv.Atoi(f[1])
		en, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/cgroups line %q: not numbers", line)
		}
		out[f[0]] = cgroupV1{hierarchy: h, enabled: en == 1}
	}
	return out, sc.Err()
}

// parseSwaps returns the swap devices listed in /proc/swaps.
func parseSwaps(r io.Reader) ([]string, error) {
	var devs []string
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // Filename Type Size Used Priority
			first = false
			continue
		}
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			devs = append(devs, f[0])
		}
	}
	return devs, sc.Err()
}

// parseFilesystems returns the filesystems of /proc/filesystems.
func parseFilesystems(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			out[f[len(f)-1]] = true
		}
	}
	return out, sc.Err()
}

// mountedCgroup2 reports whether the cgroup mount is the unified (v2)
// hierarchy, from /proc/self/mountinfo: the mount at /sys/fs/cgroup.
func mountedCgroup2(mountinfo io.Reader) (v2 bool, found bool, err error) {
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 || f[4] != "/sys/fs/cgroup" {
			continue
		}
		v2, found = g[0] == "cgroup2", true
	}
	return v2, found, sc.Err()
}
