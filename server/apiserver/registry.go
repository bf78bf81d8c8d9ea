package apiserver

import (
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	appsv1beta1 "k8s.io/api/apps/v1beta1"
	appsv1beta2 "k8s.io/api/apps/v1beta2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	extensionsv1beta1 "k8s.io/api/extensions/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// kind describes one stored resource in its storage version and the hooks
// that give it Kubernetes semantics.
type kind struct {
	gr         schema.GroupResource
	gvk        schema.GroupVersionKind // storage version
	namespaced bool
	shortNames []string
	categories []string
	newObj     func() runtime.Object
	newList    func() runtime.Object
	// hasStatus: the resource has a status subresource; writes to the main
	// resource keep the stored status and status writes keep the spec.
	hasStatus bool
	// scale: the resource has a scale subresource.
	scale bool
	// encrypt: values are encrypted at rest.
	encrypt bool
	// noGeneration: the kind has no spec to track with metadata.generation.
	noGeneration bool
	// nameIsLabel: names must be DNS-1123 labels rather than subdomains.
	nameIsLabel bool
	// defaults fills unset fields as upstream's defaulting does.
	defaults func(obj runtime.Object)
	// validate checks obj (old is nil on create).
	validate func(obj, old runtime.Object) field.ErrorList
	// fields gives the field selector set of an object (beyond metadata.name
	// and metadata.namespace).
	fields func(obj runtime.Object) fields.Set
	// table prints rows for kubectl get.
	table *tablePrinter
	// allowCreateOnUpdate: PUT of a missing object creates it.
	allowCreateOnUpdate bool
	// graceful: deletion of the object is graceful (pods bound to a node).
	graceful func(obj runtime.Object) (int64, bool)
	// extraSubresources served for the kind (beyond status and scale).
	subresources []string
}

// served is one group-version-resource the API serves; legacy versions are
// converted to and from the kind's storage version.
type served struct {
	gv     schema.GroupVersion
	k      *kind
	legacy bool
	// newObj makes an object of the served version.
	newObj func() runtime.Object
	// legacyDefaults applies the old version's defaults before conversion.
	legacyDefaults func(obj runtime.Object)
}

func (s *served) kindName() string { return s.k.gvk.Kind }

func (s *served) gvk() schema.GroupVersionKind { return s.gv.WithKind(s.k.gvk.Kind) }

// registry is the set of resources orch serves.
type registry struct {
	kinds  []*kind
	served map[schema.GroupVersion]map[string]*served // gv -> plural -> served
	order  []schema.GroupVersion
	byGR   map[schema.GroupResource]*kind
}

func (r *registry) add(k *kind) {
	r.kinds = append(r.kinds, k)
	r.byGR[k.gr] = k
	r.serve(&served{gv: k.gvk.GroupVersion(), k: k, newObj: k.newObj})
}

func (r *registry) serve(s *served) {
	m, ok := r.served[s.gv]
	if !ok {
		m = map[string]*served{}
		r.served[s.gv] = m
		r.order = append(r.order, s.gv)
	}
	m[s.k.gr.Resource] = s
}

func (r *registry) lookup(gv schema.GroupVersion, resource string) *served {
	return r.served[gv][resource]
}

// kindFor finds the kind stored for a group resource.
func (r *registry) kindFor(gr schema.GroupResource) *kind { return r.byGR[gr] }

func newRegistry() *registry {
	r := &registry{served: map[schema.GroupVersion]map[string]*served{}, byGR: map[schema.GroupResource]*kind{}}
	core := func(res, kindName string, namespaced bool, obj, list runtime.Object) *kind {
		return &kind{
			gr:         schema.GroupResource{Resource: res},
			gvk:        corev1.SchemeGroupVersion.WithKind(kindName),
			namespaced: namespaced,
			newObj:     newer(obj),
			newList:    newer(list),
		}
	}
	ns := core("namespaces", "Namespace", false, &corev1.Namespace{}, &corev1.NamespaceList{})
	ns.shortNames = []string{"ns"}
	ns.hasStatus = true
	ns.nameIsLabel = true
	ns.noGeneration = true
	ns.subresources = []string{"finalize"}
	ns.fields = func(o runtime.Object) fields.Set {
		return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
	}
	r.add(ns)

	node := core("nodes", "Node", false, &corev1.Node{}, &corev1.NodeList{})
	node.shortNames = []string{"no"}
	node.hasStatus = true
	node.fields = func(o runtime.Object) fields.Set {
		return fields.Set{"spec.unschedulable": boolString(o.(*corev1.Node).Spec.Unschedulable)}
	}
	node.subresources = []string{"proxy"}
	r.add(node)

	pod := core("pods", "Pod", true, &corev1.Pod{}, &corev1.PodList{})
	pod.shortNames = []string{"po"}
	pod.categories = []string{"all"}
	pod.hasStatus = true
	pod.noGeneration = false
	pod.subresources = []string{"binding", "eviction", "log", "exec", "attach", "portforward", "ephemeralcontainers"}
	pod.fields = podFields
	pod.graceful = podGrace
	r.add(pod)

	svc := core("services", "Service", true, &corev1.Service{}, &corev1.ServiceList{})
	svc.shortNames = []string{"svc"}
	svc.categories = []string{"all"}
	svc.hasStatus = true
	svc.nameIsLabel = true
	svc.noGeneration = true
	svc.subresources = []string{"proxy"}
	r.add(svc)

	ep := core("endpoints", "Endpoints", true, &corev1.Endpoints{}, &corev1.EndpointsList{})
	ep.shortNames = []string{"ep"}
	ep.noGeneration = true
	ep.allowCreateOnUpdate = true
	r.add(ep)

	cm := core("configmaps", "ConfigMap", true, &corev1.ConfigMap{}, &corev1.ConfigMapList{})
	cm.shortNames = []string{"cm"}
	cm.noGeneration = true
	r.add(cm)

	sec := core("secrets", "Secret", true, &corev1.Secret{}, &corev1.SecretList{})
	sec.encrypt = true
	sec.noGeneration = true
	sec.fields = func(o runtime.Object) fields.Set {
		return fields.Set{"type": string(o.(*corev1.Secret).Type)}
	}
	r.add(sec)

	ev := core("events", "Event", true, &corev1.Event{}, &corev1.EventList{})
	ev.shortNames = []string{"ev"}
	ev.noGeneration = true
	ev.fields = eventFields
	r.add(ev)

	sa := core("serviceaccounts", "ServiceAccount", true, &corev1.ServiceAccount{}, &corev1.ServiceAccountList{})
	sa.shortNames = []string{"sa"}
	sa.noGeneration = true
	r.add(sa)

	apps := func(res, kindName string, obj, list runtime.Object) *kind {
		return &kind{
			gr:         schema.GroupResource{Group: "apps", Resource: res},
			gvk:        appsv1.SchemeGroupVersion.WithKind(kindName),
			namespaced: true,
			newObj:     newer(obj),
			newList:    newer(list),
			hasStatus:  true,
			categories: []string{"all"},
		}
	}
	deploy := apps("deployments", "Deployment", &appsv1.Deployment{}, &appsv1.DeploymentList{})
	deploy.shortNames = []string{"deploy"}
	deploy.scale = true
	r.add(deploy)
	for _, gv := range []schema.GroupVersion{extensionsv1beta1.SchemeGroupVersion, appsv1beta1.SchemeGroupVersion, appsv1beta2.SchemeGroupVersion} {
		s := &served{gv: gv, k: deploy, legacy: true}
		switch gv {
		case extensionsv1beta1.SchemeGroupVersion:
			s.newObj = newer(&extensionsv1beta1.Deployment{})
		case appsv1beta1.SchemeGroupVersion:
			s.newObj = newer(&appsv1beta1.Deployment{})
		default:
			s.newObj = newer(&appsv1beta2.Deployment{})
		}
		s.legacyDefaults = legacyDeploymentDefaults(gv)
		r.serve(s)
	}

	rs := apps("replicasets", "ReplicaSet", &appsv1.ReplicaSet{}, &appsv1.ReplicaSetList{})
	rs.shortNames = []string{"rs"}
	rs.scale = true
	r.add(rs)

	ds := apps("daemonsets", "DaemonSet", &appsv1.DaemonSet{}, &appsv1.DaemonSetList{})
	ds.shortNames = []string{"ds"}
	r.add(ds)

	cr := apps("controllerrevisions", "ControllerRevision", &appsv1.ControllerRevision{}, &appsv1.ControllerRevisionList{})
	cr.hasStatus = false
	cr.categories = nil
	cr.noGeneration = true
	r.add(cr)

	slice := &kind{
		gr:           schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"},
		gvk:          discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"),
		namespaced:   true,
		newObj:       newer(&discoveryv1.EndpointSlice{}),
		newList:      newer(&discoveryv1.EndpointSliceList{}),
		noGeneration: true,
	}
	r.add(slice)

	lease := &kind{
		gr:           schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"},
		gvk:          coordinationv1.SchemeGroupVersion.WithKind("Lease"),
		namespaced:   true,
		newObj:       newer(&coordinationv1.Lease{}),
		newList:      newer(&coordinationv1.LeaseList{}),
		noGeneration: true,
	}
	r.add(lease)

	// events.k8s.io/v1 events are stored apart from core/v1 events here:
	// both are views of one table upstream, which orch keeps for later.
	evs := &kind{
		gr:           schema.GroupResource{Group: "events.k8s.io", Resource: "events"},
		gvk:          eventsv1.SchemeGroupVersion.WithKind("Event"),
		namespaced:   true,
		newObj:       newer(&eventsv1.Event{}),
		newList:      newer(&eventsv1.EventList{}),
		noGeneration: true,
	}
	r.add(evs)

	for _, k := range r.kinds {
		if k.gvk.Group == eventsv1.GroupName {
			// The "Event" hooks below are core/v1's: events.k8s.io/v1
			// events are another type.
			continue
		}
		if k.table == nil {
			k.table = tableFor(k.gvk.Kind)
		}
		k.defaults = defaultsFor(k.gvk.Kind)
		k.validate = validatorFor(k.gvk.Kind)
	}
	return r
}

// newer returns a constructor of fresh objects of proto's type.
func newer(proto runtime.Object) func() runtime.Object {
	t := reflect.TypeOf(proto).Elem()
	return func() runtime.Object { return reflect.New(t).Interface().(runtime.Object) }
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func podFields(o runtime.Object) fields.Set {
	p := o.(*corev1.Pod)
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         boolString(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

func eventFields(o runtime.Object) fields.Set {
	e := o.(*corev1.Event)
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
}

// podGrace says whether deleting a pod is graceful and with which period:
// pods that never reached a node go at once, as upstream.
func podGrace(o runtime.Object) (int64, bool) {
	p := o.(*corev1.Pod)
	if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return 0, false
	}
	g := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if p.Spec.TerminationGracePeriodSeconds != nil {
		g = *p.Spec.TerminationGracePeriodSeconds
	}
	return g, true
}

// objectFields is the full field selector set of an object.
func (k *kind) objectFields(obj runtime.Object, m metav1.Object) fields.Set {
	var set fields.Set
	if k.fields != nil {
		set = k.fields(obj)
	} else {
		set = fields.Set{}
	}
	set["metadata.name"] = m.GetName()
	if k.namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	return set
}

// singular is the lower-case kind, as discovery reports it.
func (k *kind) singular() string { return strings.ToLower(k.gvk.Kind) }
