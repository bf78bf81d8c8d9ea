package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// deleteOptions reads DeleteOptions from the body or the query.
func (s *Server) deleteOptions(r *http.Request) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		gvk := metav1.SchemeGroupVersion.WithKind("DeleteOptions")
		if _, _, err := s.codecs.UniversalDeserializer().Decode(body, &gvk, opts); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid DeleteOptions: %v", err))
		}
	}
	q := query(r)
	if g := q.Get("gracePeriodSeconds"); g != "" {
		v, err := strconv.ParseInt(g, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest("invalid gracePeriodSeconds")
		}
		opts.GracePeriodSeconds = &v
	}
	if p := q.Get("propagationPolicy"); p != "" {
		pp := metav1.DeletionPropagation(p)
		opts.PropagationPolicy = &pp
	}
	if q.Get("orphanDependents") != "" {
		b := q.Get("orphanDependents") == "true"
		opts.OrphanDependents = &b
	}
	opts.DryRun = append(opts.DryRun, q["dryRun"]...)
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: Unsupported value: %q", *opts.PropagationPolicy))
		}
	}
	return opts, nil
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	if ri.subresource != "" {
		s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, "delete"))
		return
	}
	opts, err := s.deleteOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out, gone, err := s.delete(r.Context(), sv.k, ri.namespace, ri.name, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	code := http.StatusOK
	if !gone {
		code = http.StatusAccepted
	}
	s.writeServed(w, r, sv, code, out)
}

// delete removes an object or, when finalizers or a grace period hold it,
// marks it with deletionTimestamp. gone reports an immediate removal.
func (s *Server) delete(ctx context.Context, k *kind, ns, name string, opts *metav1.DeleteOptions) (runtime.Object, bool, error) {
	dryRun := len(opts.DryRun) > 0
	for attempt := 0; ; attempt++ {
		cur, err := s.objs.get(ctx, k, ns, name)
		if err != nil {
			return nil, false, err
		}
		m, _ := meta.Accessor(cur)
		if p := opts.Preconditions; p != nil {
			if p.UID != nil && *p.UID != m.GetUID() {
				return nil, false, apierrors.NewConflict(k.gr, name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, m.GetUID()))
			}
			if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
				return nil, false, apierrors.NewConflict(k.gr, name, fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, m.GetResourceVersion()))
			}
		}
		finalizers := m.GetFinalizers()
		policy := metav1.DeletePropagationBackground
		if opts.PropagationPolicy != nil {
			policy = *opts.PropagationPolicy
		} else if opts.OrphanDependents != nil && *opts.OrphanDependents {
			policy = metav1.DeletePropagationOrphan
		}
		changed := false
		switch policy {
		case metav1.DeletePropagationForeground:
			finalizers, changed = addFinalizer(finalizers, metav1.FinalizerDeleteDependents)
			finalizers = removeFinalizer(finalizers, metav1.FinalizerOrphanDependents)
		case metav1.DeletePropagationOrphan:
			finalizers, changed = addFinalizer(finalizers, metav1.FinalizerOrphanDependents)
			finalizers = removeFinalizer(finalizers, metav1.FinalizerDeleteDependents)
		}
		grace, graceful := int64(0), false
		if k.graceful != nil {
			grace, graceful = k.graceful(cur)
			if opts.GracePeriodSeconds != nil {
				grace = *opts.GracePeriodSeconds
			}
			if grace <= 0 {
				graceful = false
			}
		}
		nsHeld := k.gr.Resource == "namespaces" && namespaceHasSpecFinalizers(cur)
		if len(finalizers) == 0 && !graceful && !nsHeld {
			if dryRun {
				return cur, true, nil
			}
			rv, _ := parseRV(m.GetResourceVersion())
			out, err := s.objs.delete(ctx, k, ns, name, rv)
			if apierrors.IsConflict(err) && attempt < 8 {
				continue
			}
			if err == nil {
				s.releaseOnDelete(ctx, k, out)
			}
			return out, err == nil, err
		}
		// Graceful or finalizer-held: mark and keep.
		if m.GetDeletionTimestamp() != nil && !changed && !graceful {
			return cur, false, nil
		}
		if m.GetDeletionTimestamp() == nil || graceful {
			ts := now()
			if graceful {
				if d := m.GetDeletionGracePeriodSeconds(); d != nil && m.GetDeletionTimestamp() != nil && *d <= grace {
					// A shorter grace period only may replace a running one.
					return cur, false, nil
				}
				m.SetDeletionGracePeriodSeconds(&grace)
			} else {
				zero := int64(0)
				m.SetDeletionGracePeriodSeconds(&zero)
			}
			m.SetDeletionTimestamp(&ts)
		}
		m.SetFinalizers(finalizers)
		if n, ok := cur.(*corev1.Namespace); ok {
			// The namespace controller empties it, then finalizes it.
			n.Status.Phase = corev1.NamespaceTerminating
		}
		if dryRun {
			return cur, false, nil
		}
		out, err := s.objs.update(ctx, k, cur)
		if apierrors.IsConflict(err) && attempt < 8 {
			continue
		}
		return out, false, err
	}
}

func addFinalizer(l []string, f string) ([]string, bool) {
	for _, v := range l {
		if v == f {
			return l, false
		}
	}
	return append(l, f), true
}

func removeFinalizer(l []string, f string) []string {
	out := l[:0:0]
	for _, v := range l {
		if v != f {
			out = append(out, v)
		}
	}
	return out
}

func (s *Server) serveDeleteCollection(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	opts, err := s.deleteOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := requestFilter(r, sv.k)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.list(r.Context(), sv.k, ri.namespace, f, nil, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var deleted []runtime.Object
	for _, obj := range res.items {
		m, _ := meta.Accessor(obj)
		out, _, err := s.delete(r.Context(), sv.k, m.GetNamespace(), m.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		deleted = append(deleted, out)
	}
	list, err := s.newServedList(sv, deleted)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObject(w, r, http.StatusOK, list)
}

// namespaceHasSpecFinalizers: a namespace with spec.finalizers stays until
// the namespace controller has emptied it and calls /finalize.
func namespaceHasSpecFinalizers(obj runtime.Object) bool {
	n, ok := obj.(*corev1.Namespace)
	return ok && len(n.Spec.Finalizers) > 0
}
