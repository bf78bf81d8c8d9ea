package manifests

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/inproc"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/apiserver"
)

// env is a test API server, a manifests directory and clients that count
// the writes (apply patches) they send.
type env struct {
	t       *testing.T
	api     *apitest.Server
	dir     string
	cfg     *rest.Config
	patches atomic.Int64
}

type countingRT struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPatch {
		c.n.Add(1)
	}
	return c.rt.RoundTrip(r)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, api: apitest.Start(t), dir: t.TempDir()}
	cfg := rest.CopyConfig(e.api.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingRT{rt: rt, n: &e.patches} })
	e.cfg = cfg
	return e
}

func (e *env) controller(cfgs ...Config) *Controller {
	e.t.Helper()
	cfg := Config{Dir: e.dir, Debounce: 20 * time.Millisecond, ResyncPeriod: time.Hour}
	if len(cfgs) > 0 {
		cfg = cfgs[0]
	}
	cs, err := kube.NewForConfig(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := NewWithClients(cfg, cs, dyn, e.api.API.RESTMapper(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) write(rel, content string) {
	e.t.Helper()
	p := filepath.Join(e.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	// Write then rename, as tools do, so a watcher never sees half a file.
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) remove(rel string) {
	e.t.Helper()
	if err := os.Remove(filepath.Join(e.dir, rel)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) sync(c *Controller) {
	e.t.Helper()
	if err := c.Sync(context.Background(), false); err != nil {
		e.t.Fatalf("Sync: %v", err)
	}
}

func (e *env) cm(ns, name string) (*corev1.ConfigMap, bool) {
	e.t.Helper()
	cm, err := e.api.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return cm, true
}

func (e *env) mustCM(ns, name string) *corev1.ConfigMap {
	e.t.Helper()
	cm, ok := e.cm(ns, name)
	if !ok {
		e.t.Fatalf("ConfigMap %s/%s not found", ns, name)
	}
	return cm
}

func (e *env) mustNoCM(ns, name string) {
	e.t.Helper()
	if _, ok := e.cm(ns, name); ok {
		e.t.Fatalf("ConfigMap %s/%s still exists", ns, name)
	}
}

func (e *env) events(reason string) []corev1.Event {
	e.t.Helper()
	l, err := e.api.Client.CoreV1().Events(DefaultNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range l.Items {
		if ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func configMap(name, ns, value string) string {
	s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
	if ns != "" {
		s += "  namespace: " + ns + "\n"
	}
	return s + "data:\n  v: \"" + value + "\"\n"
}

func TestApplyAtStartMultiDocJSONSubdir(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	e.write("sub/dir/b.yml", "# leading comment\n---\n"+configMap("b1", "team", "x")+"---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n")
	e.write("c.json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"v":"json"}}`)
	e.write("notes.txt", configMap("ignored", "", "1"))
	e.write(".hidden.yaml", configMap("hidden", "", "1"))
	e.write("list.yaml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l1}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l2}\n")
	e.sync(e.controller())

	if got := e.mustCM("default", "a").Data["v"]; got != "1" {
		t.Errorf("a: v = %q", got)
	}
	e.mustCM("team", "b1") // the Namespace was applied first
	if got := e.mustCM("default", "c").Data["v"]; got != "json" {
		t.Errorf("c: v = %q", got)
	}
	e.mustCM("default", "l1")
	e.mustCM("default", "l2")
	e.mustNoCM("default", "ignored")
	e.mustNoCM("default", "hidden")

	// Server-side apply with orch-deploy as the manager.
	a := e.mustCM("default", "a")
	found := false
	for _, mf := range a.ManagedFields {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			found = true
		}
	}
	if !found {
		t.Errorf("managedFields of a = %+v, want an Apply by %s", a.ManagedFields, FieldManager)
	}

	// The tracking ConfigMap of the subdirectory's file.
	tr := e.mustCM(DefaultNamespace, TrackingName("sub/dir/b.yml"))
	if tr.Labels[LabelManifest] != "true" || tr.Annotations[AnnotationPath] != "sub/dir/b.yml" || len(tr.Annotations[AnnotationChecksum]) != 64 {
		t.Errorf("tracking ConfigMap labels %v annotations %v", tr.Labels, tr.Annotations)
	}
	es := entries(tr)
	if len(es) != 2 || es[0].Kind != "Namespace" || es[1].Name != "b1" || es[1].Namespace != "team" || es[1].UID == "" {
		t.Errorf("tracked entries = %+v", es)
	}
}

func TestUnchangedNotReappliedChangedIs(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	e.write("b.yaml", configMap("b", "", "1"))
	c := e.controller()
	e.sync(c)
	rvA := e.mustCM("default", "a").ResourceVersion
	rvB := e.mustCM("default", "b").ResourceVersion

	before := e.patches.Load()
	e.sync(c)
	if err := c.Sync(context.Background(), true); err != nil { // a resync too
		t.Fatal(err)
	}
	if n := e.patches.Load() - before; n != 0 {
		t.Errorf("%d apply requests for unchanged files, want 0", n)
	}
	if rv := e.mustCM("default", "a").ResourceVersion; rv != rvA {
		t.Errorf("unchanged a rewritten: resourceVersion %s -> %s", rvA, rv)
	}

	e.write("a.yaml", configMap("a", "", "2"))
	before = e.patches.Load()
	e.sync(c)
	if n := e.patches.Load() - before; n != 1 {
		t.Errorf("%d apply requests after changing one single-object file, want 1", n)
	}
	if got := e.mustCM("default", "a").Data["v"]; got != "2" {
		t.Errorf("a: v = %q after change, want 2", got)
	}
	if rv := e.mustCM("default", "b").ResourceVersion; rv != rvB {
		t.Errorf("unchanged b rewritten: resourceVersion %s -> %s", rvB, rv)
	}
	// A fresh controller (a server restart) does not re-apply either.
	before = e.patches.Load()
	e.sync(e.controller())
	if n := e.patches.Load() - before; n != 0 {
		t.Errorf("%d apply requests after restart with unchanged files, want 0", n)
	}
}

func TestSkipMarker(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	e.write("b.yaml", configMap("b", "", "1"))
	e.write("b.yaml.skip", "")
	c := e.controller()
	e.sync(c)
	e.mustCM("default", "a")
	e.mustNoCM("default", "b")

	// Skipping an applied file leaves it and its objects alone.
	e.write("a.yaml.skip", "")
	e.write("a.yaml", configMap("a", "", "2"))
	e.sync(c)
	if got := e.mustCM("default", "a").Data["v"]; got != "1" {
		t.Errorf("skipped a re-applied: v = %q", got)
	}
	e.remove("b.yaml.skip")
	e.remove("a.yaml.skip")
	e.sync(c)
	e.mustCM("default", "b")
	if got := e.mustCM("default", "a").Data["v"]; got != "2" {
		t.Errorf("a: v = %q after removing the marker", got)
	}
}

func TestPruneDocumentAndFile(t *testing.T) {
	e := newEnv(t)
	e.write("multi.yaml", configMap("m1", "", "1")+"---\n"+configMap("m2", "", "1")+"---\n"+configMap("m3", "", "1"))
	e.write("solo.yaml", configMap("s", "", "1"))
	c := e.controller()
	e.sync(c)
	for _, n := range []string{"m1", "m2", "m3", "s"} {
		e.mustCM("default", n)
	}

	// One document removed: only its object goes.
	e.write("multi.yaml", configMap("m1", "", "1")+"---\n"+configMap("m3", "", "1"))
	e.sync(c)
	e.mustNoCM("default", "m2")
	e.mustCM("default", "m1")
	e.mustCM("default", "m3")

	// The file removed: all its objects and its tracking ConfigMap go.
	e.remove("multi.yaml")
	e.sync(c)
	e.mustNoCM("default", "m1")
	e.mustNoCM("default", "m3")
	e.mustNoCM(DefaultNamespace, TrackingName("multi.yaml"))
	e.mustCM("default", "s")
}

func TestPruneLeavesReplacedAndSharedObjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.write("a.yaml", configMap("shared", "", "1")+"---\n"+configMap("replaced", "", "1"))
	e.write("b.yaml", configMap("shared", "", "1"))
	c := e.controller()
	e.sync(c)

	// Someone deletes and recreates "replaced": it is not ours any more.
	if err := e.api.Client.CoreV1().ConfigMaps("default").Delete(ctx, "replaced", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "replaced"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.remove("a.yaml")
	e.sync(c)
	e.mustCM("default", "shared")   // b.yaml still holds it
	e.mustCM("default", "replaced") // another object by that name now
	e.remove("b.yaml")
	e.sync(c)
	e.mustNoCM("default", "shared")
}

func TestBadFilesMakeEventsOthersApply(t *testing.T) {
	e := newEnv(t)
	e.write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n")
	e.write("mixed.yaml", configMap("good1", "", "1")+
		"---\napiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n"+
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: badkey\ndata:\n  \"bad key!\": x\n"+
		"---\nkind: ConfigMap\nmetadata:\n  name: noversion\n"+
		"---\n"+configMap("good2", "", "1"))
	e.write("ok.yaml", configMap("ok", "", "1"))
	c := e.controller()
	err := c.Sync(context.Background(), false)
	if err != nil {
		t.Fatalf("Sync: %v (bad documents are events, not errors)", err)
	}
	e.mustCM("default", "good1")
	e.mustCM("default", "good2")
	e.mustCM("default", "ok")
	e.mustNoCM("default", "badkey")

	evs := e.events(ReasonFailed)
	want := map[string]string{
		"broken.yaml":            TrackingName("broken.yaml"),
		"mixed.yaml document 2:": TrackingName("mixed.yaml"),
		"mixed.yaml document 3:": TrackingName("mixed.yaml"),
		"mixed.yaml document 4:": TrackingName("mixed.yaml"),
	}
	for prefix, obj := range want {
		found := false
		for _, ev := range evs {
			if strings.HasPrefix(ev.Message, prefix) && ev.InvolvedObject.Name == obj && ev.Type == corev1.EventTypeWarning {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s event on %s with message starting %q; events: %+v", ReasonFailed, obj, prefix, messages(evs))
		}
	}
	for _, ev := range evs {
		if strings.Contains(ev.Message, "Gadget") && !strings.Contains(ev.Message, "unknown kind") {
			t.Errorf("unknown kind event does not say so: %q", ev.Message)
		}
	}
	tr := e.mustCM(DefaultNamespace, TrackingName("mixed.yaml"))
	if tr.Annotations[AnnotationFailed] != "3" {
		t.Errorf("failed annotation = %q, want 3", tr.Annotations[AnnotationFailed])
	}

	// A failed file is retried at resync, not on every change elsewhere.
	before := e.patches.Load()
	e.sync(c)
	if n := e.patches.Load() - before; n != 0 {
		t.Errorf("%d applies on a plain rescan, want 0", n)
	}
	if err := c.Sync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if n := e.patches.Load() - before; n == 0 {
		t.Errorf("failed file not retried at resync")
	}

	// A file that turns unreadable loses nothing: its objects stay.
	e.write("ok.yaml", "{{{ not yaml")
	e.sync(c)
	e.mustCM("default", "ok")
	// Fixed, the file applies and the failure mark goes.
	e.write("mixed.yaml", configMap("good1", "", "1"))
	e.sync(c)
	if tr := e.mustCM(DefaultNamespace, TrackingName("mixed.yaml")); tr.Annotations[AnnotationFailed] != "" {
		t.Errorf("failed annotation still %q", tr.Annotations[AnnotationFailed])
	}
	e.mustNoCM("default", "good2")
}

func messages(evs []corev1.Event) []string {
	var m []string
	for _, ev := range evs {
		m = append(m, ev.InvolvedObject.Name+": "+ev.Message)
	}
	return m
}

func TestRestartPrunesFileRemovedWhileDown(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	e.write("b.yaml", configMap("b", "", "1")+"---\n"+configMap("b2", "", "1"))
	e.sync(e.controller())
	e.mustCM("default", "a")

	// "Server down": the file goes and one document of another.
	e.remove("a.yaml")
	e.write("b.yaml", configMap("b", "", "1"))
	e.sync(e.controller()) // a new controller knows only what the cluster says
	e.mustNoCM("default", "a")
	e.mustNoCM("default", "b2")
	e.mustCM("default", "b")
}

func TestLegacyDeployment(t *testing.T) {
	e := newEnv(t)
	e.write("deck/frontend.yaml", `apiVersion: extensions/v1beta1
kind: Deployment
metadata:
  name: frontend
spec:
  replicas: 2
  template:
    metadata:
      labels:
        app: guestbook
        tier: frontend
    spec:
      containers:
      - name: php-redis
        image: gcr.io/google-samples/gb-frontend:v4
        ports:
        - containerPort: 80
`)
	c := e.controller()
	e.sync(c)
	d, err := e.api.Client.AppsV1().Deployments("default").Get(context.Background(), "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("legacy Deployment not applied: %v (events %v)", err, messages(e.events(ReasonFailed)))
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d", *d.Spec.Replicas)
	}
	// Moving the file to apps/v1 keeps the same object (no prune of it).
	e.write("deck/frontend.yaml", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  replicas: 3
  selector:
    matchLabels: {app: guestbook, tier: frontend}
  template:
    metadata:
      labels: {app: guestbook, tier: frontend}
    spec:
      containers:
      - name: php-redis
        image: gcr.io/google-samples/gb-frontend:v4
`)
	e.sync(c)
	d2, err := e.api.Client.AppsV1().Deployments("default").Get(context.Background(), "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment gone after moving to apps/v1: %v", err)
	}
	if d2.UID != d.UID || *d2.Spec.Replicas != 3 {
		t.Errorf("uid %s -> %s, replicas %d", d.UID, d2.UID, *d2.Spec.Replicas)
	}
	e.remove("deck/frontend.yaml")
	e.sync(c)
	if _, err := e.api.Client.AppsV1().Deployments("default").Get(context.Background(), "frontend", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment not pruned: %v", err)
	}
}

func TestRunWatchesDirectory(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	c := e.controller()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	has := func(name, v string) func() bool {
		return func() bool { cm, ok := e.cm("default", name); return ok && cm.Data["v"] == v }
	}
	gone := func(name string) func() bool {
		return func() bool { _, ok := e.cm("default", name); return !ok }
	}
	eventually(t, "a applied at start", has("a", "1"))
	e.write("a.yaml", configMap("a", "", "2"))
	eventually(t, "a re-applied on change", has("a", "2"))
	// A file in a subdirectory created after start; written in place.
	if err := os.MkdirAll(filepath.Join(e.dir, "new", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the rescan add the new directories' watches
	if err := os.WriteFile(filepath.Join(e.dir, "new", "deeper", "n.yaml"), []byte(configMap("nested", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "file in new subdirectory applied", has("nested", "1"))
	e.remove("a.yaml")
	eventually(t, "a pruned on removal", gone("a"))
}

func TestResyncCatchesMissedChanges(t *testing.T) {
	e := newEnv(t)
	c := e.controller(Config{Dir: e.dir, ResyncPeriod: 50 * time.Millisecond, Debounce: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Debounce of an hour: only the periodic resync can apply this.
	e.write("late.yaml", configMap("late", "", "1"))
	eventually(t, "resync applies", func() bool { _, ok := e.cm("default", "late"); return ok })
}

func TestMissingDirectoryPrunesNothing(t *testing.T) {
	e := newEnv(t)
	e.write("a.yaml", configMap("a", "", "1"))
	c := e.controller()
	e.sync(c)
	if err := os.RemoveAll(e.dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(context.Background(), false); err == nil {
		t.Fatal("Sync of a missing directory succeeded")
	}
	e.mustCM("default", "a")
}

func TestNewValidates(t *testing.T) {
	mapper := meta.NewDefaultRESTMapper(nil)
	if _, err := New(Config{}, &rest.Config{}, mapper, slog.Default()); err == nil {
		t.Error("New without Dir succeeded")
	}
	if _, err := New(Config{Dir: "/x"}, nil, mapper, slog.Default()); err == nil {
		t.Error("New without a client configuration succeeded")
	}
	if _, err := New(Config{Dir: "/x"}, &rest.Config{}, nil, slog.Default()); err == nil {
		t.Error("New without a REST mapper succeeded")
	}
}

func TestDecode(t *testing.T) {
	docs := decode([]byte("---\n# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n---\n- 1\n- 2\n---\napiVersion: v1\nkind: List\nitems:\n- 5\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n"))
	type want struct {
		where string
		name  string
		err   string
	}
	wants := []want{
		{"document 2", "a", ""},
		{"document 3", "", "metadata.name is missing"},
		{"document 4", "", "not an object"},
		{"document 5 item 1", "", "not an object"},
		{"document 5 item 2", "s", ""},
	}
	if len(docs) != len(wants) {
		t.Fatalf("got %d documents, want %d: %+v", len(docs), len(wants), docs)
	}
	for i, w := range wants {
		d := docs[i]
		if d.where != w.where {
			t.Errorf("doc %d: where %q, want %q", i, d.where, w.where)
		}
		if w.err != "" {
			if d.err == nil || !strings.Contains(d.err.Error(), w.err) {
				t.Errorf("%s: err %v, want %q", w.where, d.err, w.err)
			}
			continue
		}
		if d.err != nil || d.obj.GetName() != w.name {
			t.Errorf("%s: %v %v", w.where, d.err, d.obj)
		}
	}
	if got := decode([]byte("")); len(got) != 0 {
		t.Errorf("empty file: %+v", got)
	}
}

func TestEntryKeyIgnoresVersion(t *testing.T) {
	a := Entry{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "x", Name: "d"}
	b := Entry{APIVersion: "apps/v1beta2", Kind: "Deployment", Namespace: "x", Name: "d"}
	if a.key() != b.key() {
		t.Errorf("%s != %s", a.key(), b.key())
	}
	if TrackingName("a.yaml") == TrackingName("b.yaml") || len(TrackingName("a.yaml")) > 63 {
		t.Error("tracking names collide or are too long")
	}
}

func TestNamespaceFromLaterFile(t *testing.T) {
	e := newEnv(t)
	// "apps" sorts before "namespaces": its objects need a second try.
	e.write("apps.yaml", configMap("app", "later", "1"))
	e.write("namespaces.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: later\n")
	e.sync(e.controller())
	e.mustCM("later", "app")
	if evs := e.events(ReasonFailed); len(evs) > 0 {
		t.Errorf("failure events for a file that applied on the second try: %v", messages(evs))
	}
	if tr := e.mustCM(DefaultNamespace, TrackingName("apps.yaml")); tr.Annotations[AnnotationFailed] != "" || len(entries(tr)) != 1 {
		t.Errorf("tracking of apps.yaml: %v %v", tr.Annotations, tr.Data)
	}
}

// TestInProcessTransport runs the controller as the server does: New with
// a rest.Config whose transport calls the API handler in-process.
func TestInProcessTransport(t *testing.T) {
	e := newEnv(t)
	cfg := &rest.Config{Host: "http://orch-server.local", QPS: -1, Transport: &inproc.Transport{
		Handler: e.api.API,
		Prepare: func(ctx context.Context) context.Context {
			return apiserver.WithUser(ctx, &apiserver.User{Name: "system:orch-server", Groups: []string{"system:masters"}})
		},
	}}
	c, err := New(Config{Dir: e.dir}, cfg, e.api.API.RESTMapper(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.write("a.yaml", configMap("inproc", "", "1")+"---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n")
	if err := c.Sync(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	e.mustCM("default", "inproc")
	if _, err := e.api.Client.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("Deployment: %v (events %v)", err, messages(e.events(ReasonFailed)))
	}
}
