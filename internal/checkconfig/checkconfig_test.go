package checkconfig

import (
	"bytes"
	"compress/gzip"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodConfig = `#
# Linux/x86 6.1.0 Kernel Configuration
#
CONFIG_NAMESPACES=y
CONFIG_NET_NS=y
CONFIG_VETH=m
CONFIG_BRIDGE=y
CONFIG_VXLAN=m
CONFIG_OVERLAY_FS=m
CONFIG_NF_TABLES=m
CONFIG_NF_TABLES_SET=m
CONFIG_NFT_NAT=m
CONFIG_NFT_FIB_IPV4=m
CONFIG_NFT_NUMGEN=m
CONFIG_NFT_CT=m
CONFIG_NFT_MASQ=m
CONFIG_NFT_REJECT=m
CONFIG_BRIDGE_NETFILTER=m
CONFIG_SECCOMP_FILTER=y
CONFIG_CGROUP_BPF=y
CONFIG_NET_XGRESS=y
CONFIG_NET_CLS_BPF=m
CONFIG_NET_SCH_INGRESS=m
CONFIG_DEBUG_INFO_BTF=y
CONFIG_LOCALVERSION="-edge"
# CONFIG_DUMMY is not set
`

const v1Cgroups = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	40	1
cpuacct	2	40	1
blkio	7	40	1
memory	4	90	1
devices	5	40	1
freezer	6	2	1
pids	8	45	1
`

const v1Mountinfo = `22 1 0:21 / /sys rw shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
`

const v2Mountinfo = `22 1 0:21 / /sys rw shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate
`

// fakeRoot writes a machine's /proc, /sys and /boot files under a temp dir;
// files maps paths to contents ("" removes a default).
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	all := map[string]string{
		"/boot/config-6.1.0-edge":           goodConfig,
		"/proc/self/ns/net":                 "",
		"/proc/self/ns/pid":                 "",
		"/proc/self/ns/ipc":                 "",
		"/proc/self/ns/uts":                 "",
		"/proc/self/ns/mnt":                 "",
		"/proc/self/ns/cgroup":              "",
		"/proc/self/ns/user":                "",
		"/proc/self/mountinfo":              v1Mountinfo,
		"/proc/cgroups":                     v1Cgroups,
		"/proc/filesystems":                 "nodev\tsysfs\nnodev\tproc\n\text4\n",
		"/proc/sys/net/ipv4/ip_forward":     "0\n",
		"/proc/self/status":                 "Name:\tcat\nSeccomp:\t0\nSeccomp_filters:\t0\n",
		"/proc/swaps":                       "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
		"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
	}
	for k, v := range files {
		all[k] = v
	}
	for p, content := range all {
		if content == "-" {
			continue
		}
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func check(t *testing.T, files map[string]string, release string) Report {
	t.Helper()
	return Check(context.Background(), Config{Root: fakeRoot(t, files), Release: release, Ports: []Port{}})
}

func result(t *testing.T, r Report, group, name string) Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Group == group && res.Name == name {
			return res
		}
	}
	t.Fatalf("no result %s/%s in %+v", group, name, r.Results)
	return Result{}
}

func TestGoodMachinePasses(t *testing.T) {
	r := check(t, nil, "6.1.0-edge")
	for _, res := range r.Results {
		if res.Status != Pass {
			t.Errorf("%s/%s: %s %s", res.Group, res.Name, res.Status, res.Detail)
		}
	}
	if r.Failed() {
		t.Error("Failed() on a good machine")
	}
	if d := result(t, r, "kernel", "overlayfs").Detail; !strings.Contains(d, "module") {
		t.Errorf("overlay as a module: %q", d)
	}
	if d := result(t, r, "nftables", "fib").Detail; !strings.Contains(d, "CONFIG_NFT_FIB_IPV4=m") {
		t.Errorf("fib from config: %q", d)
	}
}

func TestFailuresSayWhatToDo(t *testing.T) {
	cases := []struct {
		name         string
		files        map[string]string
		release      string
		group, check string
		status       Status
		fix          string
	}{
		{"old kernel", nil, "4.9.0", "kernel", "version", Fail, "upgrade"},
		{"no memory cgroup", map[string]string{"/proc/cgroups": strings.Replace(v1Cgroups, "memory\t4\t90\t1", "memory\t0\t1\t0", 1)},
			"6.1.0-edge", "cgroups", "memory", Fail, "cgroup_enable=memory"},
		{"pids missing", map[string]string{"/proc/cgroups": strings.Replace(v1Cgroups, "pids\t8\t45\t1\n", "", 1)},
			"6.1.0-edge", "cgroups", "pids", Fail, "CONFIG_CGROUP_PIDS"},
		{"freezer unmounted", map[string]string{"/proc/cgroups": strings.Replace(v1Cgroups, "freezer\t6", "freezer\t0", 1)},
			"6.1.0-edge", "cgroups", "freezer", Fail, "mount it"},
		{"no cgroup namespace", map[string]string{"/proc/self/ns/cgroup": "-"}, "6.1.0-edge", "namespaces", "cgroup", Fail, "CONFIG_CGROUP_NS"},
		{"no user namespace", map[string]string{"/proc/self/ns/user": "-"}, "6.1.0-edge", "namespaces", "user (optional)", Warn, ""},
		{"no overlay", map[string]string{"/boot/config-6.1.0-edge": strings.Replace(goodConfig, "CONFIG_OVERLAY_FS=m", "# CONFIG_OVERLAY_FS is not set", 1)},
			"6.1.0-edge", "kernel", "overlayfs", Fail, "CONFIG_OVERLAY_FS"},
		{"no numgen", map[string]string{"/boot/config-6.1.0-edge": strings.Replace(goodConfig, "CONFIG_NFT_NUMGEN=m\n", "", 1)},
			"6.1.0-edge", "nftables", "numgen", Fail, "CONFIG_NFT_NUMGEN"},
		{"no vxlan", map[string]string{"/boot/config-6.1.0-edge": strings.Replace(goodConfig, "CONFIG_VXLAN=m\n", "", 1)},
			"6.1.0-edge", "network", "vxlan links", Warn, "host-gw"},
		{"no tcx", map[string]string{"/boot/config-6.1.0-edge": strings.Replace(goodConfig, "CONFIG_NET_XGRESS=y\n", "", 1)},
			"6.1.0-edge", "network", "pod fast path: tcx", Warn, "normal forwarding path"},
		{"swap on", map[string]string{"/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 1000 0 -2\n"},
			"6.1.0-edge", "system", "swap", Warn, "swapoff"},
		{"no seccomp", map[string]string{"/proc/self/status": "Name:\tcat\n"}, "6.1.0-edge", "kernel", "seccomp", Fail, "CONFIG_SECCOMP"},
		{"no kernel config", map[string]string{"/boot/config-6.1.0-edge": "-"}, "6.1.0-edge", "kernel", "configuration", Warn, "probes"},
		{"v2 without memory", map[string]string{"/proc/self/mountinfo": v2Mountinfo, "/sys/fs/cgroup/cgroup.controllers": "cpu pids\n"},
			"6.1.0-edge", "cgroups", "memory", Fail, "CONFIG_MEMCG"},
		{"v2 on an old kernel", map[string]string{"/proc/self/mountinfo": v2Mountinfo}, "4.19.0", "cgroups", "freezer", Fail, "unified_cgroup_hierarchy=0"},
		{"no cgroup mount", map[string]string{"/proc/self/mountinfo": "22 1 0:21 / /sys rw - sysfs sysfs rw\n"}, "6.1.0-edge", "cgroups", "mount", Fail, "mount cgroups"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := check(t, c.files, c.release)
			res := result(t, r, c.group, c.check)
			if res.Status != c.status {
				t.Errorf("status %s (%s), want %s", res.Status, res.Detail, c.status)
			}
			if !strings.Contains(res.Fix, c.fix) {
				t.Errorf("fix %q does not mention %q", res.Fix, c.fix)
			}
			if r.Failed() != (c.status == Fail) {
				t.Errorf("Failed() = %v with %s", r.Failed(), c.status)
			}
		})
	}
}

func TestV2Passes(t *testing.T) {
	r := check(t, map[string]string{"/proc/self/mountinfo": v2Mountinfo}, "6.1.0-edge")
	if v := result(t, r, "cgroups", "version").Detail; !strings.Contains(v, "v2") {
		t.Errorf("version: %q", v)
	}
	for _, n := range []string{"cpu", "cpuacct", "memory", "pids", "devices", "freezer"} {
		if res := result(t, r, "cgroups", n); res.Status != Pass {
			t.Errorf("%s: %s %s", n, res.Status, res.Detail)
		}
	}
}

func TestGzipConfigPreferred(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(goodConfig))
	_ = zw.Close()
	root := fakeRoot(t, map[string]string{"/proc/config.gz": buf.String(), "/boot/config-6.1.0-edge": "-"})
	r := Check(context.Background(), Config{Root: root, Release: "6.1.0-edge", Ports: []Port{}})
	if res := result(t, r, "kernel", "configuration"); res.Status != Pass || res.Detail != "/proc/config.gz" {
		t.Errorf("configuration: %+v", res)
	}
	// A corrupt config.gz is reported, not taken as "no options".
	root = fakeRoot(t, map[string]string{"/proc/config.gz": "\x1f\x8bgarbage", "/boot/config-6.1.0-edge": "-"})
	r = Check(context.Background(), Config{Root: root, Release: "6.1.0-edge", Ports: []Port{}})
	if res := result(t, r, "kernel", "configuration"); res.Status != Warn || !strings.Contains(res.Detail, "unreadable") {
		t.Errorf("corrupt configuration: %+v", res)
	}
}

func TestParseKernelConfig(t *testing.T) {
	kc, err := parseKernelConfig(strings.NewReader(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	for opt, want := range map[string]string{"VETH": "m", "CONFIG_BRIDGE": "y", "DUMMY": "n", "LOCALVERSION": "-edge", "MISSING": ""} {
		if got := kc.get(opt); got != want {
			t.Errorf("%s = %q, want %q", opt, got, want)
		}
	}
	if _, err := parseKernelConfig(strings.NewReader("hello\nworld\n")); err == nil {
		t.Error("a file without options parsed")
	}
}

func TestKernelVersion(t *testing.T) {
	for rel, want := range map[string][2]int{"6.18.44-fc-v669": {6, 18}, "4.15.0-1-generic": {4, 15}, "5.10+": {5, 10}, "6.1": {6, 1}} {
		ma, mi, err := kernelVersion(rel)
		if err != nil || ma != want[0] || mi != want[1] {
			t.Errorf("%s: %d.%d %v", rel, ma, mi, err)
		}
	}
	for _, bad := range []string{"", "six", "6", "6.x"} {
		if _, _, err := kernelVersion(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseProcFiles(t *testing.T) {
	cg, err := parseProcCgroups(strings.NewReader(v1Cgroups))
	if err != nil {
		t.Fatal(err)
	}
	if c := cg["memory"]; c.hierarchy != 4 || !c.enabled {
		t.Errorf("memory: %+v", c)
	}
	if _, err := parseProcCgroups(strings.NewReader("cpu 1 2\n")); err == nil {
		t.Error("short /proc/cgroups line parsed")
	}
	if _, err := parseProcCgroups(strings.NewReader("cpu a b c\n")); err == nil {
		t.Error("non-numeric /proc/cgroups line parsed")
	}
	swaps, err := parseSwaps(strings.NewReader("Filename Type Size Used Priority\n/swapfile file 10 0 -2\n/dev/zram0 partition 5 0 100\n"))
	if err != nil || strings.Join(swaps, ",") != "/swapfile,/dev/zram0" {
		t.Errorf("swaps %v %v", swaps, err)
	}
	fss, _ := parseFilesystems(strings.NewReader("nodev\toverlay\n\text4\n"))
	if !fss["overlay"] || !fss["ext4"] || fss["nodev"] {
		t.Errorf("filesystems %v", fss)
	}
	for mi, want := range map[string][2]bool{v1Mountinfo: {false, true}, v2Mountinfo: {true, true}, "": {false, false}} {
		v2, found, err := mountedCgroup2(strings.NewReader(mi))
		if err != nil || v2 != want[0] || found != want[1] {
			t.Errorf("mountinfo %q: v2 %v found %v %v", mi, v2, found, err)
		}
	}
}

func TestTable(t *testing.T) {
	r := Report{Results: []Result{
		{Group: "kernel", Name: "version", Status: Pass, Detail: "6.1.0"},
		{Group: "system", Name: "swap", Status: Warn, Detail: "on  (/swapfile)", Fix: "swapoff -a"},
		{Group: "cgroups", Name: "memory", Status: Fail, Detail: "disabled", Fix: "boot with\ncgroup_enable=memory"},
	}}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	want := `GROUP    CHECK    STATUS  DETAIL
kernel   version  pass    6.1.0
system   swap     warn    on (/swapfile)
cgroups  memory   FAIL    disabled

What to do:
  [warn] swap: swapoff -a
  [FAIL] memory: boot with cgroup_enable=memory

1 passed, 1 warnings, 1 failed: orch cannot run on this machine until the failures are fixed
`
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
	if !r.Failed() {
		t.Error("Failed() false with a failure")
	}
	r.Results = r.Results[:2]
	if r.Failed() {
		t.Error("Failed() true with only a warning")
	}
}

func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	u, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	free := u.LocalAddr().(*net.UDPAddr).Port
	u.Close()
	r := Check(context.Background(), Config{Root: fakeRoot(t, nil), Release: "6.1.0-edge",
		Ports: []Port{{Number: busy, Proto: "tcp", Use: "test"}, {Number: free, Proto: "udp", Use: "test"}}})
	var got []Result
	for _, res := range r.Results {
		if res.Group == "ports" {
			got = append(got, res)
		}
	}
	if len(got) != 2 || got[0].Status != Fail && got[1].Status != Fail {
		t.Fatalf("ports: %+v", got)
	}
	for _, res := range got {
		if strings.HasSuffix(res.Name, "/tcp") && (res.Status != Fail || !strings.Contains(res.Fix, "ss -lnp")) {
			t.Errorf("busy port: %+v", res)
		}
		if strings.HasSuffix(res.Name, "/udp") && res.Status != Pass {
			t.Errorf("free port: %+v", res)
		}
	}
}

// TestThisMachine runs every check, probes included, on the machine the
// test runs on (ports aside: other tests may hold 6443); orch's test
// machine has everything.
func TestThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to probe the kernel")
	}
	before, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	r := Check(context.Background(), Config{Ports: []Port{}})
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); !bytes.Equal(before, after) {
		t.Errorf("the probe changed the host's ip_forward: %q -> %q", before, after)
	}
	var buf bytes.Buffer
	_ = r.WriteTable(&buf)
	if r.Failed() {
		t.Errorf("a required check fails on this machine:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "not root") || !strings.Contains(buf.String(), "scratch network namespace") {
		t.Errorf("probes did not run:\n%s", buf.String())
	}
	t.Logf("\n%s", buf.String())
}

// TestThisMachineWithoutProbes reads the kernel configuration instead.
func TestThisMachineWithoutProbes(t *testing.T) {
	r := Check(context.Background(), Config{Ports: []Port{}, NoProbe: true})
	var buf bytes.Buffer
	_ = r.WriteTable(&buf)
	if r.Failed() {
		t.Errorf("a required check fails on this machine:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "scratch network namespace") {
		t.Errorf("probed although told not to:\n%s", buf.String())
	}
}
