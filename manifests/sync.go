package manifests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// Labels and annotations of the tracking ConfigMaps.
const (
	// LabelManifest marks a tracking ConfigMap.
	LabelManifest = "orch.dev/manifest"
	// AnnotationPath is the file's path relative to the directory.
	AnnotationPath = "orch.dev/manifest-path"
	// AnnotationChecksum is the sha256 of the content last applied.
	AnnotationChecksum = "orch.dev/manifest-checksum"
	// AnnotationFailed counts the documents that failed at the last apply;
	// such files are retried at every resync.
	AnnotationFailed = "orch.dev/manifest-failed"
	// DataObjects is the ConfigMap key listing the applied objects (JSON).
	DataObjects = "objects"

	// ReasonFailed is the reason of the Warning Event of a bad document.
	ReasonFailed = "ApplyManifestFailed"
	// ReasonApplied is the reason of the Normal Event of an applied file.
	ReasonApplied = "AppliedManifest"
)

// Entry is one object a file applied, as recorded in its ConfigMap.
type Entry struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Namespace  string    `json:"namespace,omitempty"`
	Name       string    `json:"name"`
	UID        types.UID `json:"uid"`
}

// key identifies the object across versions of its group.
func (e Entry) key() string {
	gv, _ := schema.ParseGroupVersion(e.APIVersion)
	return gv.Group + "/" + e.Kind + "/" + e.Namespace + "/" + e.Name
}

func (e Entry) String() string {
	if e.Namespace == "" {
		return e.Kind + " " + e.Name
	}
	return e.Kind + " " + e.Namespace + "/" + e.Name
}

// TrackingName is the name of the ConfigMap that tracks the file at path
// (relative to the directory, with slashes).
func TrackingName(path string) string {
	s := sha256.Sum256([]byte(path))
	return "orch-manifest-" + hex.EncodeToString(s[:10])
}

// Sync applies every new or changed file and prunes what removed files
// and removed documents had created. Unchanged files are not re-applied
// unless some of their documents failed last time and retryFailed is set.
func (c *Controller) Sync(ctx context.Context, retryFailed bool) error {
	files, err := scan(c.cfg.Dir)
	if err != nil {
		return err
	}
	list, err := c.kube.CoreV1().ConfigMaps(c.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelManifest + "=true"})
	if err != nil {
		return fmt.Errorf("list tracking ConfigMaps: %w", err)
	}
	tracked := map[string]*corev1.ConfigMap{}
	for i := range list.Items {
		cm := &list.Items[i]
		if p := cm.Annotations[AnnotationPath]; p != "" {
			tracked[p] = cm
		}
	}
	present := map[string]bool{}
	var errs []error
	var retry []file
	for _, f := range files {
		present[f.path] = true
		if f.skip {
			continue
		}
		cm := tracked[f.path]
		if cm != nil && f.err == nil && cm.Annotations[AnnotationChecksum] == f.sum &&
			(!retryFailed || cm.Annotations[AnnotationFailed] == "") {
			continue
		}
		ncm, deferred, err := c.applyFile(ctx, f, cm, tracked, true)
		if deferred {
			retry = append(retry, f)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.path, err))
		}
		if ncm != nil {
			tracked[f.path] = ncm
		}
	}
	// Files whose objects the API refused go once more, after the others:
	// what they need (a Namespace, a CRD) may come from a later file.
	for _, f := range retry {
		ncm, _, err := c.applyFile(ctx, f, tracked[f.path], tracked, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.path, err))
		}
		if ncm != nil {
			tracked[f.path] = ncm
		}
	}
	var gone []string
	for p := range tracked {
		if !present[p] {
			gone = append(gone, p)
		}
	}
	sort.Strings(gone)
	for _, p := range gone {
		if err := c.removeFile(ctx, p, tracked); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// failure is a document that did not apply.
type failure struct {
	where string
	err   error
}

// applyFile applies the documents of f, prunes what the previous version of
// f applied and no longer holds, and records the result in f's ConfigMap,
// which it returns. Bad documents become Events; the error is for the API
// failing (the ConfigMap could not be written). With deferRefused, a file
// some of whose objects the API refused is left as it is (no pruning, no
// tracking, no events) and reported deferred, to be applied again later in
// the same sync.
func (c *Controller) applyFile(ctx context.Context, f file, cm *corev1.ConfigMap, tracked map[string]*corev1.ConfigMap, deferRefused bool) (*corev1.ConfigMap, bool, error) {
	old := entries(cm)
	var applied []Entry
	var failures []failure
	keepOld := false // a document could not be identified: prune nothing
	failedKeys := map[string]bool{}
	if f.err != nil {
		failures = append(failures, failure{where: "file", err: f.err})
		keepOld = true
	}
	docs := decode(f.data)
	sort.SliceStable(docs, func(i, j int) bool { return applyOrder(docs[i]) < applyOrder(docs[j]) })
	for _, d := range docs {
		if d.err != nil {
			failures = append(failures, failure{where: d.where, err: d.err})
			keepOld = true
			continue
		}
		e, err := c.apply(ctx, d.obj)
		if err != nil {
			failures = append(failures, failure{where: d.where, err: err})
			failedKeys[entryOf(d.obj).key()] = true
			continue
		}
		applied = append(applied, e)
	}
	if deferRefused && len(failedKeys) > 0 {
		return nil, true, nil
	}

	// Prune what the file no longer holds, unless another file claims it.
	inFile := map[string]bool{}
	for _, e := range applied {
		inFile[e.key()] = true
		inFile[string(e.UID)] = true
	}
	claims := otherClaims(tracked, f.path)
	var pruneErrs []error
	for _, e := range old {
		if inFile[e.key()] || inFile[string(e.UID)] {
			continue
		}
		if keepOld || failedKeys[e.key()] || claims[e.key()] {
			if !claims[e.key()] {
				applied = append(applied, e) // still ours, tracked until it applies again
			}
			continue
		}
		if err := c.delete(ctx, e); err != nil {
			pruneErrs = append(pruneErrs, err)
			applied = append(applied, e) // retried at the next sync
			continue
		}
		c.log.Info("pruned object removed from manifest", "file", f.path, "object", e.String())
	}
	for _, err := range pruneErrs {
		failures = append(failures, failure{where: "prune", err: err})
	}

	for _, fl := range failures {
		c.log.Warn("manifest document failed", "file", f.path, "document", fl.where, "err", fl.err)
	}
	ncm, err := c.writeTracking(ctx, f, cm, applied, len(failures))
	if err != nil {
		return nil, false, err
	}
	if len(failures) == 0 {
		c.log.Info("applied manifest", "file", f.path, "objects", len(applied))
		c.event(ctx, ncm, corev1.EventTypeNormal, ReasonApplied, fmt.Sprintf("Applied %s: %d objects", f.path, len(applied)))
	}
	for _, fl := range failures {
		c.event(ctx, ncm, corev1.EventTypeWarning, ReasonFailed, fmt.Sprintf("%s %s: %v", f.path, fl.where, fl.err))
	}
	return ncm, false, nil
}

// removeFile deletes what a removed file had applied, then its ConfigMap.
func (c *Controller) removeFile(ctx context.Context, path string, tracked map[string]*corev1.ConfigMap) error {
	cm := tracked[path]
	claims := otherClaims(tracked, path)
	var left []Entry
	var errs []error
	for _, e := range entries(cm) {
		if claims[e.key()] {
			continue
		}
		if err := c.delete(ctx, e); err != nil {
			errs = append(errs, err)
			left = append(left, e)
			continue
		}
		c.log.Info("pruned object of removed manifest", "file", path, "object", e.String())
	}
	if len(errs) > 0 {
		// Keep tracking what could not be deleted, to retry.
		if _, err := c.writeTracking(ctx, file{path: path, sum: cm.Annotations[AnnotationChecksum]}, cm, left, len(errs)); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	err := c.kube.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cm.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete tracking ConfigMap %s: %w", cm.Name, err)
	}
	delete(tracked, path)
	c.log.Info("removed manifest", "file", path)
	return nil
}

// otherClaims is the set of object keys that files other than path track.
func otherClaims(tracked map[string]*corev1.ConfigMap, path string) map[string]bool {
	claims := map[string]bool{}
	for p, cm := range tracked {
		if p == path {
			continue
		}
		for _, e := range entries(cm) {
			claims[e.key()] = true
		}
	}
	return claims
}

// applyOrder puts what other objects need first: Namespaces and
// CustomResourceDefinitions.
func applyOrder(d document) int {
	if d.obj == nil {
		return 1
	}
	switch d.obj.GetKind() {
	case "Namespace", "CustomResourceDefinition":
		return 0
	}
	return 1
}

func entryOf(obj *unstructured.Unstructured) Entry {
	return Entry{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID()}
}

// mapping resolves an object's kind through the mapper, resetting it once
// when the kind is unknown and it caches discovery (a CRD just applied).
func (c *Controller) mapping(apiVersion, kind string) (*meta.RESTMapping, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, fmt.Errorf("apiVersion %q: %w", apiVersion, err)
	}
	gk := schema.GroupKind{Group: gv.Group, Kind: kind}
	m, err := c.mapper.RESTMapping(gk, gv.Version)
	if r, ok := c.mapper.(meta.ResettableRESTMapper); ok && meta.IsNoMatchError(err) {
		r.Reset()
		m, err = c.mapper.RESTMapping(gk, gv.Version)
	}
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, fmt.Errorf("unknown kind %s in %s: %w", kind, apiVersion, err)
		}
		return nil, fmt.Errorf("resolve kind %s %s: %w", apiVersion, kind, err)
	}
	return m, nil
}

// apply server-side applies obj and returns what to track of it.
func (c *Controller) apply(ctx context.Context, obj *unstructured.Unstructured) (Entry, error) {
	m, err := c.mapping(obj.GetAPIVersion(), obj.GetKind())
	if err != nil {
		return Entry{}, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(metav1.NamespaceDefault)
		}
	} else {
		obj.SetNamespace("")
	}
	res, err := c.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Apply(ctx, obj.GetName(), obj,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return Entry{}, fmt.Errorf("apply %s %s: %w", obj.GetKind(), nsName(obj.GetNamespace(), obj.GetName()), err)
	}
	e := entryOf(obj)
	e.UID = res.GetUID()
	return e, nil
}

// delete deletes what e names if it is still the object that was applied
// (same UID); an object already gone, or replaced by another, is done.
func (c *Controller) delete(ctx context.Context, e Entry) error {
	m, err := c.mapping(e.APIVersion, e.Kind)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil // the kind is gone, so are its objects
		}
		return err
	}
	policy := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &policy}
	if e.UID != "" {
		uid := e.UID
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err = c.dyn.Resource(m.Resource).Namespace(e.Namespace).Delete(ctx, e.Name, opts)
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("delete %s: %w", e, err)
}

func nsName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// entries reads what a tracking ConfigMap lists (nothing for nil).
func entries(cm *corev1.ConfigMap) []Entry {
	if cm == nil || cm.Data[DataObjects] == "" {
		return nil
	}
	var es []Entry
	if err := json.Unmarshal([]byte(cm.Data[DataObjects]), &es); err != nil {
		return nil
	}
	return es
}

// writeTracking creates or updates f's ConfigMap.
func (c *Controller) writeTracking(ctx context.Context, f file, cm *corev1.ConfigMap, applied []Entry, failed int) (*corev1.ConfigMap, error) {
	if applied == nil {
		applied = []Entry{}
	}
	js, err := json.Marshal(applied)
	if err != nil {
		return nil, fmt.Errorf("encode tracked objects: %w", err)
	}
	var ncm *corev1.ConfigMap
	if cm == nil {
		ncm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrackingName(f.path), Namespace: c.cfg.Namespace}}
	} else {
		ncm = cm.DeepCopy()
	}
	if ncm.Labels == nil {
		ncm.Labels = map[string]string{}
	}
	if ncm.Annotations == nil {
		ncm.Annotations = map[string]string{}
	}
	ncm.Labels[LabelManifest] = "true"
	ncm.Labels["app.kubernetes.io/managed-by"] = "orch"
	ncm.Annotations[AnnotationPath] = f.path
	ncm.Annotations[AnnotationChecksum] = f.sum
	if failed > 0 {
		ncm.Annotations[AnnotationFailed] = strconv.Itoa(failed)
	} else {
		delete(ncm.Annotations, AnnotationFailed)
	}
	ncm.Data = map[string]string{DataObjects: string(js)}
	cms := c.kube.CoreV1().ConfigMaps(c.cfg.Namespace)
	if cm == nil {
		out, err := cms.Create(ctx, ncm, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			// Tracked under a path annotation we did not list (edited by
			// hand): take it over.
			cur, gerr := cms.Get(ctx, ncm.Name, metav1.GetOptions{})
			if gerr != nil {
				return nil, fmt.Errorf("get tracking ConfigMap %s: %w", ncm.Name, gerr)
			}
			ncm.ResourceVersion = cur.ResourceVersion
			out, err = cms.Update(ctx, ncm, metav1.UpdateOptions{FieldManager: FieldManager})
		}
		if err != nil {
			return nil, fmt.Errorf("write tracking ConfigMap %s: %w", ncm.Name, err)
		}
		return out, nil
	}
	out, err := cms.Update(ctx, ncm, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, fmt.Errorf("write tracking ConfigMap %s: %w", ncm.Name, err)
	}
	return out, nil
}

// event records an Event on a tracking ConfigMap; failing to is only logged.
func (c *Controller) event(ctx context.Context, cm *corev1.ConfigMap, typ, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", cm.Name, time.Now().UnixNano()),
			Namespace: cm.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "v1", Kind: "ConfigMap", Namespace: cm.Namespace, Name: cm.Name,
			UID: cm.UID, ResourceVersion: cm.ResourceVersion,
		},
		Reason:              reason,
		Message:             truncate(msg, 1024),
		Type:                typ,
		Source:              corev1.EventSource{Component: FieldManager},
		ReportingController: "orch.dev/manifests",
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	if _, err := c.kube.CoreV1().Events(cm.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.log.Warn("recording manifest event", "configmap", cm.Name, "reason", reason, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}
