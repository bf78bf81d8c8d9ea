package server

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/internal/syncbuf"
)

var (
	kubectlOnce sync.Once
	kubectlPath string
	kubectlErr  error
	// kubectlTmp is the directory kubectl was built into, removed by
	// TestMain.
	kubectlTmp string
)

// kubectlBinary returns upstream kubectl: bin/kubectl from `make`, or one
// built now from the same package.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	kubectlOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			kubectlErr = err
			return
		}
		p := filepath.Join(root, "bin", "kubectl")
		if _, err := os.Stat(p); err == nil {
			kubectlPath = p
			return
		}
		dir, err := os.MkdirTemp("", "orch-kubectl-")
		if err != nil {
			kubectlErr = err
			return
		}
		kubectlTmp = dir
		p = filepath.Join(dir, "kubectl")
		cmd := exec.Command("go", "build", "-o", p, "./internal/kubectl/bin")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			kubectlErr = err
			t.Logf("%s", out)
			return
		}
		kubectlPath = p
	})
	if kubectlErr != nil {
		t.Fatalf("kubectl: %v", kubectlErr)
	}
	return kubectlPath
}

type kubectlRun struct {
	t          *testing.T
	bin        string
	kubeconfig string
	dir        string
}

func (k *kubectlRun) run(args ...string) (string, error) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Dir = k.dir
	cmd.Env = append(os.Environ(), "HOME="+k.dir, "KUBECACHEDIR="+filepath.Join(k.dir, "cache"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// ok runs kubectl and fails the test on error; it returns the output.
func (k *kubectlRun) ok(args ...string) string {
	k.t.Helper()
	out, err := k.run(args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (k *kubectlRun) contains(out string, want ...string) {
	k.t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			k.t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestKubectl(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kubectl")
	}
	dir := t.TempDir()
	cfg := testConfig(dir)
	_, stop := start(t, cfg)
	k := &kubectlRun{t: t, bin: kubectlBinary(t), kubeconfig: cfg.WriteKubeconfig, dir: dir}
	deck, err := filepath.Abs("../examples/deck")
	if err != nil {
		t.Fatal(err)
	}

	out := k.ok("apply", "-f", deck)
	k.contains(out, "configmap/nginx-config created", "deployment.apps/redis created", "deployment.extensions/web-deployment created", "service/web-svc created")
	out = k.ok("apply", "-f", deck)
	k.contains(out, "configmap/nginx-config unchanged", "service/redis unchanged")
	// Server-side apply of the same manifests takes the fields over.
	out = k.ok("apply", "--server-side", "--force-conflicts", "-f", filepath.Join(deck, "redis.yaml"))
	k.contains(out, "deployment.apps/redis serverside-applied")

	out = k.ok("get", "deploy", "-o", "wide")
	k.contains(out, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "IMAGES", "web-python:v1", "redis:7")
	out = k.ok("get", "svc", "-A")
	k.contains(out, "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "80:3", "kubernetes")
	out = k.ok("get", "pods", "-l", "name=redis", "--show-labels")
	k.contains(out, "redis-", "name=redis")
	out = k.ok("get", "deploy", "web-deployment", "-o", "yaml")
	k.contains(out, "apiVersion: apps/v1", "matchLabels:", "name: web")
	out = k.ok("describe", "deployment", "redis")
	k.contains(out, "Name:", "redis", "Replicas:", "Pod Template:")

	k.ok("label", "svc", "redis", "tier=db")
	k.ok("annotate", "svc", "redis", "note=hello")
	out = k.ok("get", "svc", "redis", "-o", "jsonpath={.metadata.labels.tier}/{.metadata.annotations.note}")
	if out != "db/hello" {
		t.Fatalf("label/annotate: %q", out)
	}
	k.ok("patch", "deployment", "redis", "-p", `{"spec":{"template":{"metadata":{"labels":{"patched":"yes"}}}}}`)
	k.ok("patch", "deployment", "redis", "--type=json", "-p", `[{"op":"replace","path":"/spec/revisionHistoryLimit","value":5}]`)
	out = k.ok("get", "deploy", "redis", "-o", "jsonpath={.spec.template.metadata.labels.patched}/{.spec.revisionHistoryLimit}")
	if out != "yes/5" {
		t.Fatalf("patch: %q", out)
	}
	// kubectl edit, with an editor that rewrites the image.
	editor := filepath.Join(dir, "editor.sh")
	if err := os.WriteFile(editor, []byte("#!/bin/sh\nsed -i 's/redis:7/redis:7.2/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(k.bin, "--kubeconfig", k.kubeconfig, "edit", "deployment", "redis")
	cmd.Env = append(os.Environ(), "KUBE_EDITOR="+editor, "HOME="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("edit: %v %s", err, b)
	}
	out = k.ok("get", "deploy", "redis", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if out != "redis:7.2" {
		t.Fatalf("edit: image %q", out)
	}
	k.ok("scale", "deployment", "web-deployment", "--replicas=3")
	out = k.ok("get", "deploy", "web-deployment", "-o", "jsonpath={.spec.replicas}")
	if out != "3" {
		t.Fatalf("scale: %q", out)
	}

	// The deck's Secret and a ConfigMap from the command line.
	if err := os.WriteFile(filepath.Join(dir, "username.txt"), []byte("admin"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "password.txt"), []byte("1f2d1e2e67df"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.ok("create", "secret", "generic", "mysecret", "--from-file=username=./username.txt", "--from-file=password=./password.txt")
	out = k.ok("get", "secret", "mysecret", "-o", "yaml")
	k.contains(out, "username: YWRtaW4=", "password: MWYyZDFlMmU2N2Rm")
	k.ok("create", "configmap", "app-config", "--from-literal=mode=edge")
	out = k.ok("get", "cm", "app-config", "-o", "jsonpath={.data.mode}")
	if out != "edge" {
		t.Fatalf("configmap: %q", out)
	}

	// get -w streams a change.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, k.bin, "--kubeconfig", k.kubeconfig, "get", "cm", "-w", "--output-watch-events")
	watch.Env = append(os.Environ(), "HOME="+dir)
	var wout syncbuf.Buffer
	watch.Stdout = &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	k.ok("create", "configmap", "watched", "--from-literal=a=b")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(wout.String(), "watched") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	_ = watch.Wait()
	k.contains(wout.String(), "ADDED", "watched")

	// Cascading deletes.
	k.ok("delete", "deployment", "web-deployment", "--cascade=orphan")
	out = k.ok("get", "rs", "-l", "name=web", "-o", "name")
	if !strings.Contains(out, "replicaset.apps/web-deployment-") {
		t.Fatalf("orphaned replicaset gone: %q", out)
	}
	k.ok("delete", "rs", "-l", "name=web", "--cascade=foreground", "--wait=true", "--timeout=30s")
	k.ok("delete", "deployment", "redis", "--cascade=background")
	k.ok("wait", "--for=delete", "pod", "-l", "name=redis", "--timeout=30s")
	k.ok("delete", "configmap", "watched")

	// After a restart every object is there with the same uid and
	// resourceVersion.
	before := k.ok("get", "cm,secret,svc,deploy", "-o", "custom-columns=NAME:.metadata.name,UID:.metadata.uid,RV:.metadata.resourceVersion", "--no-headers")
	stop()
	_, _ = start(t, cfg)
	after := k.ok("get", "cm,secret,svc,deploy", "-o", "custom-columns=NAME:.metadata.name,UID:.metadata.uid,RV:.metadata.resourceVersion", "--no-headers")
	if before != after {
		t.Fatalf("objects changed across a restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestMain removes the kubectl built for the package's tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if kubectlTmp != "" {
		_ = os.RemoveAll(kubectlTmp)
	}
	os.Exit(code)
}
