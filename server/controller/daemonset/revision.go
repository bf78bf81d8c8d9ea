package daemonset

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// hashLabel is the label naming a pod's (and a revision's) template hash.
const hashLabel = appsv1.DefaultDaemonSetUniqueLabelKey

// revisionData is what a ControllerRevision of ds stores: a patch that
// replaces the template, as upstream stores it.
func revisionData(ds *appsv1.DaemonSet) ([]byte, error) {
	tpl, err := json.Marshal(ds.Spec.Template)
	if err != nil {
		return nil, fmt.Errorf("encode template: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(tpl, &m); err != nil {
		return nil, fmt.Errorf("encode template: %w", err)
	}
	m["$patch"] = "replace"
	b, err := json.Marshal(map[string]any{"spec": map[string]any{"template": m}})
	if err != nil {
		return nil, fmt.Errorf("encode revision: %w", err)
	}
	return b, nil
}

// templateHash hashes the revision data with the collision count into the
// short, label-safe form upstream uses.
func templateHash(data []byte, collisions *int32) string {
	h := fnv.New32a()
	h.Write(data)
	if collisions != nil {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(*collisions))
		h.Write(b[:])
	}
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

func sameData(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	if bytes.Equal(ca.Bytes(), cb.Bytes()) {
		return true
	}
	var ma, mb any
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return false
	}
	return apiequality.Semantic.DeepEqual(ma, mb)
}

// revisions claims the DaemonSet's ControllerRevisions and returns the
// current one (made or bumped when the template changed) and the old ones.
func (c *Controller) revisions(ctx context.Context, ds *appsv1.DaemonSet, sel labels.Selector) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	all, err := c.crLister.ControllerRevisions(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("list revisions: %w", err)
	}
	claimer := &kit.Claimer{
		Owner:    ds,
		Ref:      kit.ControllerRef(ds, controllerKind.GroupVersion().String(), controllerKind.Kind),
		Selector: sel,
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := c.client.AppsV1().ControllerRevisions(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
		CanAdopt: c.canAdopt(ds),
	}
	owned, err := kit.Claim(ctx, claimer, all)
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(owned, func(i, j int) bool { return owned[i].Revision < owned[j].Revision })
	data, err := revisionData(ds)
	if err != nil {
		return nil, nil, err
	}
	var maxRev int64
	for _, r := range owned {
		maxRev = max(maxRev, r.Revision)
	}
	var cur *appsv1.ControllerRevision
	var old []*appsv1.ControllerRevision
	for _, r := range owned {
		if cur == nil && sameData(r.Data.Raw, data) {
			cur = r
			continue
		}
		old = append(old, r)
	}
	switch {
	case cur == nil:
		cur, err = c.createRevision(ctx, ds, data, maxRev+1)
		if err != nil {
			return nil, nil, err
		}
	case cur.Revision < maxRev:
		// A rollback to an earlier template: it becomes the newest.
		up := cur.DeepCopy()
		up.Revision = maxRev + 1
		if cur, err = c.client.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, up, metav1.UpdateOptions{}); err != nil {
			return nil, nil, fmt.Errorf("bump revision %s: %w", up.Name, err)
		}
	}
	return cur, old, nil
}

func (c *Controller) createRevision(ctx context.Context, ds *appsv1.DaemonSet, data []byte, rev int64) (*appsv1.ControllerRevision, error) {
	collisions := ds.Status.CollisionCount
	for try := 0; try < 10; try++ {
		hash := templateHash(data, collisions)
		lbls := map[string]string{}
		for k, v := range ds.Spec.Template.Labels {
			lbls[k] = v
		}
		lbls[hashLabel] = hash
		cr := &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{
				Name: ds.Name + "-" + hash, Namespace: ds.Namespace, Labels: lbls,
				OwnerReferences: []metav1.OwnerReference{kit.ControllerRef(ds, controllerKind.GroupVersion().String(), controllerKind.Kind)},
			},
			Data:     runtime.RawExtension{Raw: data},
			Revision: rev,
		}
		got, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Create(ctx, cr, metav1.CreateOptions{})
		if err == nil {
			return got, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create revision: %w", err)
		}
		existing, gerr := c.client.AppsV1().ControllerRevisions(ds.Namespace).Get(ctx, cr.Name, metav1.GetOptions{})
		if gerr != nil {
			return nil, fmt.Errorf("get revision %s: %w", cr.Name, gerr)
		}
		if kit.IsControlledBy(existing, string(ds.UID)) && sameData(existing.Data.Raw, data) {
			return existing, nil
		}
		// A hash collision: count it in status and try the next hash.
		n := int32(1)
		if collisions != nil {
			n = *collisions + 1
		}
		collisions = &n
		up := ds.DeepCopy()
		up.Status.CollisionCount = collisions
		if _, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, up, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("record hash collision: %w", err)
		}
	}
	return nil, fmt.Errorf("daemonset %s/%s: too many revision hash collisions", ds.Namespace, ds.Name)
}

// truncateHistory deletes old revisions beyond revisionHistoryLimit that
// no live pod uses, oldest first.
func (c *Controller) truncateHistory(ctx context.Context, ds *appsv1.DaemonSet, old []*appsv1.ControllerRevision, inUse map[string]bool) error {
	limit := 10
	if ds.Spec.RevisionHistoryLimit != nil {
		limit = int(*ds.Spec.RevisionHistoryLimit)
	}
	var idle []*appsv1.ControllerRevision
	for _, r := range old {
		if !inUse[r.Labels[hashLabel]] {
			idle = append(idle, r)
		}
	}
	for i := 0; i < len(idle)-limit; i++ {
		err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, idle[i].Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete revision %s: %w", idle[i].Name, err)
		}
	}
	return nil
}

func (c *Controller) canAdopt(ds *appsv1.DaemonSet) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		fresh, err := c.client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if fresh.UID != ds.UID || fresh.DeletionTimestamp != nil {
			return fmt.Errorf("daemonset %s/%s is gone or being deleted", ds.Namespace, ds.Name)
		}
		return nil
	}
}
