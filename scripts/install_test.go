package scripts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// sandbox is a throw-away root for install.sh: every path it writes is
// redirected inside, and systemctl is a recorder on PATH.
type sandbox struct {
	t                               *testing.T
	root, bin, sysd, fakebin, calls string
	env                             map[string]string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	root := t.TempDir()
	s := &sandbox{
		t: t, root: root,
		bin:     filepath.Join(root, "usr", "local", "bin"),
		sysd:    filepath.Join(root, "etc", "systemd", "system"),
		fakebin: filepath.Join(root, "fakebin"),
		calls:   filepath.Join(root, "systemctl.calls"),
	}
	// What every system has: the installer and uninstaller leave them.
	for _, d := range []string{s.bin, s.sysd, s.fakebin, filepath.Join(root, "run"), filepath.Join(root, "var", "lib"), filepath.Join(root, "var", "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	recorder := "#!/bin/sh\necho \"$*\" >> '" + s.calls + "'\n"
	if err := os.WriteFile(filepath.Join(s.fakebin, "systemctl"), []byte(recorder), 0o755); err != nil {
		t.Fatal(err)
	}
	s.env = map[string]string{
		"PATH":                     s.fakebin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME":                     root,
		"TMPDIR":                   root,
		"INSTALL_ORCH_ROOT":        root,
		"INSTALL_ORCH_BIN_DIR":     s.bin,
		"INSTALL_ORCH_SYSTEMD_DIR": s.sysd,
		"INSTALL_ORCH_SYMLINK":     "force",
		"ARCH":                     "amd64",
	}
	return s
}

// install runs install.sh as `curl ... | sh -` does: the script on stdin.
func (s *sandbox) install(extra map[string]string, args ...string) (string, error) {
	s.t.Helper()
	script, err := os.ReadFile("install.sh")
	if err != nil {
		s.t.Fatal(err)
	}
	return s.run(exec.Command("sh", append([]string{"-s", "-"}, args...)...), bytes.NewReader(script), extra)
}

func (s *sandbox) run(cmd *exec.Cmd, stdin *bytes.Reader, extra map[string]string) (string, error) {
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	cmd.Env = nil
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// systemctl returns the recorded systemctl calls and forgets them.
func (s *sandbox) systemctl() []string {
	s.t.Helper()
	b, err := os.ReadFile(s.calls)
	if err != nil && !os.IsNotExist(err) {
		s.t.Fatal(err)
	}
	_ = os.Remove(s.calls)
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			calls = append(calls, l)
		}
	}
	return calls
}

// snapshot describes every path under the root but the recorder's: kind,
// mode, content hash or link target, and modification time.
func (s *sandbox) snapshot() map[string]string {
	s.t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		if rel == "." || strings.HasPrefix(rel, "fakebin") || rel == "systemctl.calls" || strings.HasSuffix(rel, ".log") {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			snap[rel] = "link " + target
		case info.IsDir():
			snap[rel] = fmt.Sprintf("dir %o", info.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			snap[rel] = fmt.Sprintf("file %o %x %d", info.Mode().Perm(), sum[:8], info.ModTime().UnixNano())
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return snap
}

func (s *sandbox) read(p string) string {
	s.t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		s.t.Fatal(err)
	}
	return string(b)
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// release serves a release directory on 127.0.0.1: the binary and its
// checksum file (with sum, or the right one if sum is empty).
func release(t *testing.T, binary []byte, sum string) string {
	t.Helper()
	if sum == "" {
		h := sha256.Sum256(binary)
		sum = hex.EncodeToString(h[:])
	}
	files := map[string][]byte{
		"/v9.9.9/orch":                binary,
		"/v9.9.9/orch-arm64":          []byte("arm64 binary"),
		"/v9.9.9/sha256sum-amd64.txt": []byte(sum + "  orch\n"),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v9.9.9"
}

func equalCalls(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: systemctl calls\n%q\nwant\n%q", what, got, want)
	}
}

func diff(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	sort.Strings(d)
	return d
}

func shellcheck(t *testing.T, paths ...string) {
	t.Helper()
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Log("shellcheck not installed: generated scripts not checked")
		return
	}
	if out, err := exec.Command(sc, append([]string{"-s", "sh"}, paths...)...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

func TestInstallShellcheck(t *testing.T) {
	shellcheck(t, "install.sh")
}

func TestInstallServer(t *testing.T) {
	s := newSandbox(t)
	binary := []byte("#!/bin/sh\necho orch test binary\n")
	url := release(t, binary, "")
	env := map[string]string{
		"INSTALL_ORCH_DOWNLOAD_URL": url,
		"INSTALL_ORCH_EXEC":         "server --disable-agent --tls-san=edge%1",
		"ORCH_TOKEN":                `s3cret"\x`,
		"ORCH_LOG_LEVEL":            "debug",
	}
	if out, err := s.install(env); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if got := s.read(filepath.Join(s.bin, "orch")); got != string(binary) {
		t.Errorf("binary = %q", got)
	}
	for p, want := range map[string]os.FileMode{
		filepath.Join(s.bin, "orch"):              0o755,
		filepath.Join(s.bin, "orch-uninstall.sh"): 0o755,
		filepath.Join(s.bin, "orch-killall.sh"):   0o755,
		filepath.Join(s.sysd, "orch.service"):     0o644,
		filepath.Join(s.sysd, "orch.service.env"): 0o600,
	} {
		if m := mode(t, p); m != want {
			t.Errorf("%s: mode %o, want %o", p, m, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(s.bin, "kubectl")); err != nil || target != "orch" {
		t.Errorf("kubectl symlink: %q, %v", target, err)
	}
	unit := s.read(filepath.Join(s.sysd, "orch.service"))
	for _, want := range []string{
		"ExecStart=" + s.bin + "/orch server --disable-agent --tls-san=edge%%1\n",
		"KillMode=process\n", "Delegate=yes\n", "Restart=always\n", "LimitNOFILE=1048576\n",
		"EnvironmentFile=-" + s.sysd + "/orch.service.env\n", "WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if env := s.read(filepath.Join(s.sysd, "orch.service.env")); env != "ORCH_TOKEN=\"s3cret\\\"\\\\x\"\nORCH_LOG_LEVEL=\"debug\"\n" {
		t.Errorf("env file = %q", env)
	}
	if _, err := os.Stat(filepath.Join(s.bin, "orch-agent-uninstall.sh")); err == nil {
		t.Error("server install wrote the agent uninstaller")
	}
	equalCalls(t, "first install", s.systemctl(), []string{"daemon-reload", "enable orch", "restart orch"})
	shellcheck(t, filepath.Join(s.bin, "orch-uninstall.sh"), filepath.Join(s.bin, "orch-killall.sh"))

	// Again, same settings: nothing changes, the service is only started.
	before := s.snapshot()
	if out, err := s.install(env); err != nil {
		t.Fatalf("second install: %v\n%s", err, out)
	}
	if d := diff(before, s.snapshot()); len(d) > 0 {
		t.Errorf("second install changed files:\n%s", strings.Join(d, "\n"))
	}
	equalCalls(t, "second install", s.systemctl(), []string{"enable orch", "start orch"})

	// New arguments: the unit is rewritten, systemd reloaded, orch restarted.
	env["INSTALL_ORCH_EXEC"] = "--disable-agent"
	if out, err := s.install(env, "--node-label", `note=a "b" $HOME`); err != nil {
		t.Fatalf("third install: %v\n%s", err, out)
	}
	if unit := s.read(filepath.Join(s.sysd, "orch.service")); !strings.Contains(unit, "ExecStart="+s.bin+`/orch server --disable-agent --node-label "note=a \"b\" $$HOME"`+"\n") {
		t.Errorf("unit after new exec:\n%s", unit)
	}
	equalCalls(t, "changed install", s.systemctl(), []string{"daemon-reload", "enable orch", "restart orch"})
}

func TestInstallAgent(t *testing.T) {
	s := newSandbox(t)
	url := release(t, []byte("agent binary"), "")
	env := map[string]string{
		"INSTALL_ORCH_DOWNLOAD_URL": url,
		"ORCH_URL":                  "https://10.0.0.1:6443",
		"ORCH_TOKEN":                "K10abc::server:def",
		"INSTALL_ORCH_EXEC":         "--node-label role=edge",
		"INSTALL_ORCH_SKIP_START":   "true",
	}
	if out, err := s.install(env); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	unit := s.read(filepath.Join(s.sysd, "orch-agent.service"))
	if !strings.Contains(unit, "ExecStart="+s.bin+"/orch agent --node-label role=edge\n") || !strings.Contains(unit, "KillMode=process") {
		t.Errorf("agent unit:\n%s", unit)
	}
	if env := s.read(filepath.Join(s.sysd, "orch-agent.service.env")); env != "ORCH_URL=\"https://10.0.0.1:6443\"\nORCH_TOKEN=\"K10abc::server:def\"\n" {
		t.Errorf("env file = %q", env)
	}
	if m := mode(t, filepath.Join(s.sysd, "orch-agent.service.env")); m != 0o600 {
		t.Errorf("env file mode %o", m)
	}
	if _, err := os.Stat(filepath.Join(s.bin, "orch-agent-uninstall.sh")); err != nil {
		t.Errorf("agent uninstaller: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.sysd, "orch.service")); err == nil {
		t.Error("agent install wrote the server unit")
	}
	equalCalls(t, "skip start", s.systemctl(), []string{"daemon-reload", "enable orch-agent"})
}

func TestInstallRefusals(t *testing.T) {
	binary := []byte("real binary")
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"checksum mismatch", map[string]string{"INSTALL_ORCH_DOWNLOAD_URL": "SUMBAD"}, "checksum mismatch"},
		{"no checksum", map[string]string{"INSTALL_ORCH_DOWNLOAD_URL": "SUMNONE"}, "no sha256 for orch"},
		{"download fails", map[string]string{"INSTALL_ORCH_DOWNLOAD_URL": "http://127.0.0.1:1/none"}, "download"},
		{"agent without token", map[string]string{"ORCH_URL": "https://10.0.0.1:6443", "INSTALL_ORCH_BINARY": "BIN"}, "needs ORCH_TOKEN"},
		{"agent without url", map[string]string{"INSTALL_ORCH_EXEC": "agent", "INSTALL_ORCH_BINARY": "BIN"}, "needs ORCH_URL"},
		{"skip download without binary", map[string]string{"INSTALL_ORCH_SKIP_DOWNLOAD": "true"}, "no executable"},
		{"bad cgroup root", map[string]string{"INSTALL_ORCH_CGROUP_ROOT": "a/b", "INSTALL_ORCH_BINARY": "BIN"}, "one path element"},
		{"unknown arch", map[string]string{"ARCH": "mips", "INSTALL_ORCH_DOWNLOAD_URL": "SUMBAD"}, "unsupported architecture"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			local := filepath.Join(s.root, "local-orch")
			if err := os.WriteFile(local, binary, 0o644); err != nil {
				t.Fatal(err)
			}
			switch c.env["INSTALL_ORCH_DOWNLOAD_URL"] {
			case "SUMBAD":
				c.env["INSTALL_ORCH_DOWNLOAD_URL"] = release(t, binary, strings.Repeat("ab", 32))
			case "SUMNONE":
				c.env["INSTALL_ORCH_DOWNLOAD_URL"] = release(t, binary, "not-a-sum")
			}
			if c.env["INSTALL_ORCH_BINARY"] == "BIN" {
				c.env["INSTALL_ORCH_BINARY"] = local
			}
			before := s.snapshot()
			out, err := s.install(c.env)
			if err == nil {
				t.Fatalf("install succeeded:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output lacks %q:\n%s", c.want, out)
			}
			if d := diff(before, s.snapshot()); len(d) > 0 {
				t.Errorf("refused install changed files:\n%s", strings.Join(d, "\n"))
			}
			if calls := s.systemctl(); len(calls) > 0 {
				t.Errorf("refused install called systemctl: %q", calls)
			}
		})
	}
}

func TestInstallChecksumMismatchKeepsInstalledBinary(t *testing.T) {
	s := newSandbox(t)
	old := []byte("old release")
	if out, err := s.install(map[string]string{"INSTALL_ORCH_DOWNLOAD_URL": release(t, old, "")}); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	s.systemctl()
	before := s.snapshot()
	out, err := s.install(map[string]string{"INSTALL_ORCH_DOWNLOAD_URL": release(t, []byte("tampered"), strings.Repeat("cd", 32))})
	if err == nil || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("tampered upgrade: %v\n%s", err, out)
	}
	if d := diff(before, s.snapshot()); len(d) > 0 {
		t.Errorf("refused upgrade changed files:\n%s", strings.Join(d, "\n"))
	}
	if calls := s.systemctl(); len(calls) > 0 {
		t.Errorf("refused upgrade called systemctl: %q", calls)
	}
}

func TestInstallAirGapped(t *testing.T) {
	s := newSandbox(t)
	// The binary put in place by hand; no server to download from.
	if err := os.WriteFile(filepath.Join(s.bin, "orch"), []byte("carried in"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"INSTALL_ORCH_SKIP_DOWNLOAD": "true", "INSTALL_ORCH_DOWNLOAD_URL": "http://127.0.0.1:1/unreachable"}
	if out, err := s.install(env); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if got := s.read(filepath.Join(s.bin, "orch")); got != "carried in" {
		t.Errorf("binary = %q", got)
	}
	equalCalls(t, "air-gapped", s.systemctl(), []string{"daemon-reload", "enable orch", "restart orch"})

	// Or from a path.
	s2 := newSandbox(t)
	local := filepath.Join(s2.root, "media", "orch")
	if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(local, []byte("from usb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := s2.install(map[string]string{"INSTALL_ORCH_BINARY": local}); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if got := s2.read(filepath.Join(s2.bin, "orch")); got != "from usb" || mode(t, filepath.Join(s2.bin, "orch")) != 0o755 {
		t.Errorf("binary = %q mode %o", got, mode(t, filepath.Join(s2.bin, "orch")))
	}
}

func TestInstallKubectlSymlinkRespectsExisting(t *testing.T) {
	s := newSandbox(t)
	if err := os.WriteFile(filepath.Join(s.fakebin, "kubectl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := s.install(map[string]string{"INSTALL_ORCH_SYMLINK": "", "INSTALL_ORCH_BINARY": "/bin/true"})
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(s.bin, "kubectl")); err == nil {
		t.Error("kubectl linked although another kubectl is on PATH")
	}
	if !strings.Contains(out, "not linking") {
		t.Errorf("no warning about the existing kubectl:\n%s", out)
	}
}

// TestUninstall installs a server whose "orch" is a copy of sleep, then, in
// fresh network, mount and pid namespaces (so nothing outside can be
// touched), sets up what a running node has — orch and container
// processes, a pod cgroup, mounts and a pinned network namespace under the
// data dir, the bridge with a veth, the VXLAN and DNS links, orch's
// nftables tables next to someone else's — runs orch-uninstall.sh and
// checks that everything of orch's is gone and nothing else.
func TestUninstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces, mounts, links, cgroups")
	}
	for _, tool := range []string{"unshare", "ip", "nft", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	s := newSandbox(t)
	cgroupRoot := fmt.Sprintf("orchtest-edge-%d", os.Getpid())
	cg := filepath.Join("/sys/fs/cgroup/pids", cgroupRoot)
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		cg = filepath.Join("/sys/fs/cgroup", cgroupRoot) // cgroup v2
	}
	t.Cleanup(func() {
		// The namespaces' processes died with their pid namespace; only
		// the cgroup directories would outlive a failure.
		for _, d := range []string{filepath.Join(cg, "pod1"), cg} {
			_ = os.Remove(d)
		}
	})
	before := s.snapshot()
	env := map[string]string{"INSTALL_ORCH_BINARY": sleep, "INSTALL_ORCH_CGROUP_ROOT": cgroupRoot}
	if out, err := s.install(env); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	s.systemctl()
	if err := os.MkdirAll(filepath.Join(s.root, "etc", "orch"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.root, "etc", "orch", "config.yaml"), []byte("token: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
set -e
DATA="$ROOT/var/lib/orch"; POD="$DATA/agent/pods/p1"
ip link add orch0 type bridge
ip link add vethedge1 type veth peer name vethedge1p
ip link set vethedge1 master orch0
ip link add orch-dns type dummy 2>/dev/null || ip link add orch-dns type bridge # no dummy module on some kernels
ip link add orch.1 type vxlan id 1 dstport 8472
ip link add keep0 type bridge
ip link set lo up
ip addr add 10.42.0.1/32 dev lo label lo:orch
ip route add unreachable 10.42.0.0/24 proto 112 metric 1048576
ip route add unreachable 10.99.0.0/24 proto static
nft add table ip orch-net
nft add table ip orch-proxy
nft add table inet keepme
mkdir -p "$POD/shm" "$POD/ns" "$ROOT/run/orch/x" "$DATA/agent/containers/c1/rootfs" "$ROOT/var/log/pods/p1"
mount -t tmpfs tmpfs "$POD/shm"
mount -t tmpfs tmpfs "$ROOT/run/orch/x"
mount --bind "$POD/shm" "$DATA/agent/containers/c1/rootfs"
touch "$POD/ns/net"
unshare --net="$POD/ns/net" true
"$BIN/orch" 1000 & OPID=$!
sleep 1001 & CPID=$!
mkdir -p "$CG/pod1"
echo "$CPID" > "$CG/pod1/cgroup.procs"
set +e
"$BIN/orch-uninstall.sh" > "$ROOT/uninstall.log" 2>&1
echo "rc=$?"
sleep 0.2
echo "--links"; ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1
echo "--tables"; nft list tables
echo "--lo"; ip -4 -o addr show dev lo | awk '{print $4}'
echo "--routes"; ip -4 route show type unreachable | awk '{print $2}'
echo "--mounts"; awk -v r="$ROOT" 'index($2, r) == 1 {print $2}' /proc/self/mounts
echo "--alive"
for p in $OPID $CPID; do
    st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ] && echo "$p"
done
echo "--cgroup"; [ -d "$CG" ] && echo "$CG"
echo "--end"
`
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "sh", "-c", script)
	out, err := s.run(cmd, nil, map[string]string{"ROOT": s.root, "BIN": s.bin, "CG": cg})
	log, _ := os.ReadFile(filepath.Join(s.root, "uninstall.log"))
	if err != nil || !strings.Contains(out, "--end") {
		t.Fatalf("namespace script: %v\n%s\nuninstall log:\n%s", err, out, log)
	}
	section := func(name string) []string {
		_, rest, _ := strings.Cut(out, "--"+name+"\n")
		body, _, _ := strings.Cut(rest, "--")
		return strings.Fields(body)
	}
	if !strings.Contains(out, "rc=0") {
		t.Errorf("uninstall failed: %s\n%s", out, log)
	}
	links := strings.Join(section("links"), " ")
	for _, l := range []string{"orch0", "orch.1", "orch-dns", "vethedge1"} {
		if strings.Contains(" "+links+" ", " "+l+" ") {
			t.Errorf("link %s left behind: %s", l, links)
		}
	}
	if !strings.Contains(links, "keep0") {
		t.Errorf("uninstall removed a link that is not orch's: %s", links)
	}
	if lo := strings.Join(section("lo"), " "); lo != "127.0.0.1/8" {
		t.Errorf("lo addresses after uninstall: %s, want only 127.0.0.1/8", lo)
	}
	if routes := strings.Join(section("routes"), " "); routes != "10.99.0.0/24" {
		t.Errorf("unreachable routes after uninstall: %s, want only the one that is not orch's", routes)
	}
	tables := strings.Join(section("tables"), " ")
	if strings.Contains(tables, "orch") || !strings.Contains(tables, "keepme") {
		t.Errorf("nftables tables after uninstall: %s", tables)
	}
	if m := section("mounts"); len(m) > 0 {
		t.Errorf("mounts left behind: %v", m)
	}
	if a := section("alive"); len(a) > 0 {
		t.Errorf("processes still alive: %v", a)
	}
	if c := section("cgroup"); len(c) > 0 {
		t.Errorf("cgroup left behind: %v", c)
	}
	if d := diff(before, s.snapshot()); len(d) > 0 {
		t.Errorf("uninstall left files behind:\n%s\nlog:\n%s", strings.Join(d, "\n"), log)
	}
	equalCalls(t, "uninstall", s.systemctl(), []string{"stop orch", "disable orch", "reset-failed orch", "daemon-reload"})
}
