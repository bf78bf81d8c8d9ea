package kit

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// Patcher applies a strategic merge patch to one object (a typed client's
// Patch bound to a resource).
type Patcher func(ctx context.Context, namespace, name string, patch []byte) error

// AdoptPatch makes obj (uid) controlled by owner.
func AdoptPatch(uid types.UID, owner metav1.OwnerReference) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []metav1.OwnerReference{owner},
		"uid":             uid,
	}})
	return b
}

// ReleasePatch removes the owner reference ownerUID from obj (uid).
func ReleasePatch(uid, ownerUID types.UID) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []map[string]any{{"$patch": "delete", "uid": ownerUID}},
		"uid":             uid,
	}})
	return b
}

// ControllerRef is the controlling owner reference to owner of kind gvk.
func ControllerRef(owner metav1.Object, apiVersion, kind string) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: &t, BlockOwnerDeletion: &t}
}

// Claimer adopts orphans matching a selector and releases owned objects
// that no longer match, as upstream's ControllerRefManager does.
type Claimer struct {
	Owner    metav1.Object
	Ref      metav1.OwnerReference
	Selector labels.Selector
	Patch    Patcher
	// CanAdopt is checked once before the first adoption: a fresh read of the
	// owner that fails when the owner is gone or being deleted.
	CanAdopt func(ctx context.Context) error
	checked  bool
	adoptErr error
}

// Claim returns the objects of objs the owner controls after adopting and
// releasing; errors of single objects are joined and returned too.
func Claim[T metav1.Object](ctx context.Context, c *Claimer, objs []T) ([]T, error) {
	var out []T
	var errs []error
	for _, o := range objs {
		ref := metav1.GetControllerOfNoCopy(o)
		match := c.Selector.Matches(labels.Set(o.GetLabels()))
		switch {
		case ref != nil && ref.UID == c.Owner.GetUID():
			if match {
				out = append(out, o)
				continue
			}
			if c.Owner.GetDeletionTimestamp() != nil {
				continue
			}
			if err := c.Patch(ctx, o.GetNamespace(), o.GetName(), ReleasePatch(o.GetUID(), c.Owner.GetUID())); err != nil && !isGone(err) {
				errs = append(errs, fmt.Errorf("release %s: %w", o.GetName(), err))
			}
		case ref != nil:
			// Controlled by someone else.
		case match && o.GetDeletionTimestamp() == nil && c.Owner.GetDeletionTimestamp() == nil:
			if !c.checked {
				c.checked = true
				if c.CanAdopt != nil {
					c.adoptErr = c.CanAdopt(ctx)
				}
			}
			if c.adoptErr != nil {
				continue
			}
			if err := c.Patch(ctx, o.GetNamespace(), o.GetName(), AdoptPatch(o.GetUID(), c.Ref)); err != nil {
				if !isGone(err) {
					errs = append(errs, fmt.Errorf("adopt %s: %w", o.GetName(), err))
				}
				continue
			}
			out = append(out, o)
		}
	}
	return out, joinErrs(errs)
}
