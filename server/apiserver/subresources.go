package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// NodeConnector reaches the agent of a node for the pod subresources that
// run there (log, exec, attach, portforward) and node proxying.
type NodeConnector interface {
	// ServeNode serves r on node; rest is the kubelet-style path, such as
	// "containerLogs/<ns>/<pod>/<container>" or "exec/<ns>/<pod>/<container>".
	ServeNode(w http.ResponseWriter, r *http.Request, node, rest string)
}

// SetNodeConnector installs the way to reach agents.
func (s *Server) SetNodeConnector(c NodeConnector) { s.nodes = c }

func (s *Server) serveSubresource(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	switch ri.subresource {
	case "binding":
		s.serveBinding(w, r, sv, ri)
	case "eviction":
		s.serveEviction(w, r, sv, ri)
	case "finalize":
		if r.Method != http.MethodPut {
			s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, r.Method))
			return
		}
		s.serveUpdate(w, r, sv, ri)
	case "log", "exec", "attach", "portforward":
		s.servePodNode(w, r, sv, ri)
	default:
		s.writeError(w, r, apierrors.NewNotFound(sv.k.gr, ri.name+"/"+ri.subresource))
	}
}

func (s *Server) serveBinding(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	b := &corev1.Binding{}
	if err := s.readPosted(r, sv, ri, corev1.SchemeGroupVersion.WithKind("Binding"), b); err != nil {
		s.writeError(w, r, err)
		return
	}
	if b.Target.Name == "" || (b.Target.Kind != "" && b.Target.Kind != "Node") {
		s.writeError(w, r, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), ri.name, nil))
		return
	}
	_, err := s.objs.guaranteedUpdate(r.Context(), sv.k, ri.namespace, ri.name, func(cur runtime.Object) (runtime.Object, error) {
		p := cur.(*corev1.Pod)
		if p.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(sv.k.gr, ri.name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", ri.name))
		}
		if b.UID != "" && p.UID != b.UID {
			return nil, apierrors.NewConflict(sv.k.gr, ri.name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", b.UID, p.UID))
		}
		if p.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(sv.k.gr, ri.name, fmt.Errorf("pod %s is already assigned to node %q", ri.name, p.Spec.NodeName))
		}
		p.Spec.NodeName = b.Target.Name
		for k, v := range b.Annotations {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[k] = v
		}
		setPodCondition(&p.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now()})
		return p, nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObject(w, r, http.StatusCreated, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
}

func setPodCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			if st.Conditions[i].Status == c.Status {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

func (s *Server) serveEviction(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	ev := &policyv1.Eviction{}
	if err := s.readPosted(r, sv, ri, policyv1.SchemeGroupVersion.WithKind("Eviction"), ev); err != nil {
		s.writeError(w, r, err)
		return
	}
	opts := ev.DeleteOptions
	if opts == nil {
		opts = &metav1.DeleteOptions{}
	}
	// orch has no PodDisruptionBudgets yet: every eviction is allowed.
	if _, _, err := s.delete(r.Context(), sv.k, ri.namespace, ri.name, opts); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeObject(w, r, http.StatusCreated, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
}

func (s *Server) servePodNode(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	obj, err := s.objs.get(r.Context(), sv.k, ri.namespace, ri.name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p := obj.(*corev1.Pod)
	if p.Spec.NodeName == "" {
		s.writeError(w, r, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", p.Name)))
		return
	}
	container := query(r).Get("container")
	if container == "" {
		if len(p.Spec.Containers) != 1 {
			names := ""
			for i, c := range p.Spec.Containers {
				if i > 0 {
					names += " "
				}
				names += c.Name
			}
			if ri.subresource != "portforward" {
				s.writeError(w, r, apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: [%s]", p.Name, names)))
				return
			}
		} else {
			container = p.Spec.Containers[0].Name
		}
	}
	if s.nodes == nil {
		s.writeError(w, r, apierrors.NewServiceUnavailable("no connection to node "+p.Spec.NodeName))
		return
	}
	rest := ""
	switch ri.subresource {
	case "log":
		rest = "containerLogs/" + p.Namespace + "/" + p.Name + "/" + container
	case "portforward":
		rest = "portForward/" + p.Namespace + "/" + p.Name
	default:
		rest = ri.subresource + "/" + p.Namespace + "/" + p.Name + "/" + container
	}
	s.nodes.ServeNode(w, r, p.Spec.NodeName, rest)
}

// scaleOf renders the autoscaling/v1 Scale of a Deployment or ReplicaSet.
func scaleOf(obj runtime.Object) (*autoscalingv1.Scale, error) {
	sc := &autoscalingv1.Scale{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"}}
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sc.ObjectMeta = metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, CreationTimestamp: o.CreationTimestamp}
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	case *appsv1.ReplicaSet:
		sc.ObjectMeta = metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, CreationTimestamp: o.CreationTimestamp}
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	default:
		return nil, fmt.Errorf("no scale for %T", obj)
	}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
		sc.Status.Selector = s.String()
	}
	return sc, nil
}

func setReplicas(obj runtime.Object, n int32) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		o.Spec.Replicas = &n
	case *appsv1.ReplicaSet:
		o.Spec.Replicas = &n
	}
}

func (s *Server) serveScale(w http.ResponseWriter, r *http.Request, sv *served, ri requestInfo) {
	ctx := r.Context()
	cur, err := s.objs.get(ctx, sv.k, ri.namespace, ri.name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sc, err := scaleOf(cur)
	if err != nil {
		s.writeError(w, r, apierrors.NewInternalError(err))
		return
	}
	if r.Method == http.MethodGet {
		s.writeObject(w, r, http.StatusOK, sc)
		return
	}
	o, err := parseWriteOpts(r, managerFromAgent(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := readBody(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var next autoscalingv1.Scale
	switch r.Method {
	case http.MethodPut:
		if err := s.decodeAny(body, autoscalingv1.SchemeGroupVersion.WithKind("Scale"), &next); err != nil {
			s.writeError(w, r, apierrors.NewBadRequest(fmt.Sprintf("invalid Scale: %v", err)))
			return
		}
	case http.MethodPatch:
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		curJSON, _ := json.Marshal(sc)
		var patched []byte
		switch types.PatchType(ct) {
		case types.MergePatchType:
			patched, err = jsonpatch.MergePatch(curJSON, body)
		case types.StrategicMergePatchType:
			patched, err = strategicpatch.StrategicMergePatch(curJSON, body, &autoscalingv1.Scale{})
		case types.JSONPatchType:
			var p jsonpatch.Patch
			if p, err = jsonpatch.DecodePatch(body); err == nil {
				patched, err = p.Apply(curJSON)
			}
		default:
			s.writeError(w, r, unsupportedMediaType(ct))
			return
		}
		if err == nil {
			err = json.Unmarshal(patched, &next)
		}
		if err != nil {
			s.writeError(w, r, apierrors.NewBadRequest(fmt.Sprintf("unable to apply patch: %v", err)))
			return
		}
	default:
		s.writeError(w, r, apierrors.NewMethodNotSupported(sv.k.gr, r.Method))
		return
	}
	if next.Spec.Replicas < 0 {
		s.writeError(w, r, apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), ri.name, nil))
		return
	}
	if next.ResourceVersion != "" && next.ResourceVersion != sc.ResourceVersion {
		s.writeError(w, r, apierrors.NewConflict(sv.k.gr, ri.name, errors.New(conflictMessage)))
		return
	}
	obj := cur.DeepCopyObject()
	setReplicas(obj, next.Spec.Replicas)
	out, err := s.commitUpdate(ctx, sv.k, "", obj, cur, o, nil)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sc, _ = scaleOf(out)
	s.writeObject(w, r, http.StatusOK, sc)
}

// decodeAny decodes a JSON, YAML or protobuf body into into.
func (s *Server) decodeAny(body []byte, gvk schema.GroupVersionKind, into runtime.Object) error {
	_, _, err := s.codecs.UniversalDeserializer().Decode(body, &gvk, into)
	return err
}

// readPosted reads the body of a POST to a subresource (Binding, Eviction)
// into into, checking the method and that the body names the URL's object.
func (s *Server) readPosted(r *http.Request, sv *served, ri requestInfo, gvk schema.GroupVersionKind, into runtime.Object) error {
	if r.Method != http.MethodPost {
		return apierrors.NewMethodNotSupported(sv.k.gr, r.Method)
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if err := s.decodeAny(body, gvk, into); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("invalid %s: %v", gvk.Kind, err))
	}
	if m, err := meta.Accessor(into); err == nil && m.GetName() != "" && m.GetName() != ri.name {
		return apierrors.NewBadRequest("name in URL does not match name in " + gvk.Kind + " object")
	}
	return nil
}
