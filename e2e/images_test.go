package e2e

import (
	"archive/tar"
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/orch-dev/orch/internal/testimage"
)

// The deck's images, built here from what the machine has (no registry is
// reachable): web-python:v1 and :v2 (examples/deck/web-python, a static Go
// binary), redis:7 (Debian's redis-server binary with its libraries) and
// busybox:stable (Debian's busybox-static). Every image has the busybox
// layer at the bottom, so a shell and `env` are there for kubectl exec, and
// the layer is stored once per node.

// redisBinary is Debian's redis binary (package redis-tools); started as
// redis-server it is the server.
const redisBinary = "/usr/bin/redis-check-rdb"

// buildImages writes one `docker save` archive per image into dir and
// returns their paths.
func buildImages(moduleRoot, dir string) ([]string, error) {
	base, err := testimage.BusyboxEntries()
	if err != nil {
		return nil, err
	}
	// More of busybox's applets, as a distribution's busybox image has
	// them (kubectl cp needs tar).
	have := map[string]bool{}
	for _, a := range testimage.BusyboxApplets {
		have[a] = true
	}
	for _, a := range []string{"tar", "gzip", "cp", "mv", "ln", "chmod", "grep", "sed", "awk", "head", "tail",
		"wc", "sort", "date", "httpd", "uname", "du", "df", "find", "xargs", "tee", "nslookup", "ping", "kill", "top", "vi"} {
		if !have[a] {
			base = append(base, testimage.Symlink("bin/"+a, "busybox"))
		}
	}
	baseLayer, err := testimage.Layer(base, testimage.Gzip)
	if err != nil {
		return nil, err
	}
	var archives []string
	save := func(name string, c testimage.Compression, img v1.Image, tags ...string) error {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := testimage.WriteDockerSave(f, c, testimage.Tagged{Image: img, Tags: tags}); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		archives = append(archives, p)
		return f.Close()
	}

	bb, err := testimage.Image(testimage.Platform(), v1.Config{Cmd: []string{"sh"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}, baseLayer)
	if err != nil {
		return nil, err
	}
	if err := save("busybox.tar", testimage.None, bb, "busybox:stable"); err != nil {
		return nil, err
	}

	goImage := func(pkg, ldflags, entry string, cfg v1.Config, file string, tag string) error {
		bin := filepath.Join(dir, filepath.Base(file)+".bin")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w "+ldflags, "-o", bin, pkg)
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
		body, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		var es []testimage.Entry
		for d := filepath.Dir(entry); d != "."; d = filepath.Dir(d) {
			es = append([]testimage.Entry{testimage.Dir(d)}, es...)
		}
		es = append(es, testimage.Entry{Name: entry, Type: tar.TypeReg, Mode: 0o755, Body: body})
		app, err := testimage.Layer(es, testimage.Gzip)
		if err != nil {
			return err
		}
		img, err := testimage.Image(testimage.Platform(), cfg, baseLayer, app)
		if err != nil {
			return err
		}
		return save(file, testimage.Gzip, img, tag)
	}
	for _, v := range []string{"v1", "v2"} {
		err := goImage("./examples/deck/web-python", "-X main.version="+v, "app/web", v1.Config{
			Entrypoint: []string{"/app/web"}, WorkingDir: "/app",
			Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PORT=5000"},
			ExposedPorts: map[string]struct{}{"5000/tcp": {}},
		}, "web-python-"+v+".tar.gz", "web-python:"+v)
		if err != nil {
			return nil, err
		}
	}
	// The tests' network tool (e2e/nettool), with busybox beside it.
	err = goImage("./e2e/nettool", "", "usr/bin/nettool", v1.Config{
		Cmd: []string{"nettool", "serve"},
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
	}, "nettool.tar.gz", "nettool:e2e")
	if err != nil {
		return nil, err
	}

	redis, err := redisEntries()
	if err != nil {
		return nil, err
	}
	rl, err := testimage.Layer(redis, testimage.Gzip)
	if err != nil {
		return nil, err
	}
	img, err := testimage.Image(testimage.Platform(), v1.Config{
		// As the official image: protected mode off, so other pods may
		// connect without a password.
		Cmd: []string{"redis-server", "--protected-mode", "no"}, WorkingDir: "/data",
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LD_LIBRARY_PATH=/usr/lib/redis-libs"},
		ExposedPorts: map[string]struct{}{"6379/tcp": {}},
	}, baseLayer, rl)
	if err != nil {
		return nil, err
	}
	if err := save("redis.tar", testimage.None, img, "redis:7"); err != nil {
		return nil, err
	}
	return archives, nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// redisEntries is a layer with the redis binary as usr/bin/redis-server, the
// shared libraries ldd names for it in usr/lib/redis-libs and the dynamic
// loader where the binary expects it.
func redisEntries() ([]testimage.Entry, error) {
	body, err := os.ReadFile(redisBinary)
	if err != nil {
		return nil, fmt.Errorf("read %s (apt-get install redis-tools): %w", redisBinary, err)
	}
	out, err := exec.Command("ldd", redisBinary).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", redisBinary, err)
	}
	es := []testimage.Entry{testimage.Dir("usr"), testimage.Dir("usr/bin"), testimage.Dir("usr/lib"),
		testimage.Dir("usr/lib/redis-libs"), testimage.Dir("data"),
		{Name: "usr/bin/redis-server", Type: tar.TypeReg, Mode: 0o755, Body: body}}
	dirs := map[string]bool{"usr": true, "usr/bin": true, "usr/lib": true}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := lddLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		lib := m[1]
		data, err := os.ReadFile(lib) // follows symlinks
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", lib, err)
		}
		name := "usr/lib/redis-libs/" + filepath.Base(lib)
		if strings.Contains(filepath.Base(lib), "ld-linux") {
			// The loader must be at the path compiled into the binary.
			name = strings.TrimPrefix(lib, "/")
			for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
				dirs[d] = true
				es = append(es, testimage.Dir(d))
			}
		}
		es = append(es, testimage.Entry{Name: name, Type: tar.TypeReg, Mode: 0o755, Body: data})
	}
	return es, sc.Err()
}
