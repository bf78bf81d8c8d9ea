package apiserver

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
)

// tablePrinter renders objects as kubectl's table rows, with the columns
// upstream shows (priority 1 columns appear with -o wide).
type tablePrinter struct {
	columns []metav1.TableColumnDefinition
	row     func(obj runtime.Object, now time.Time) []interface{}
}

func col(name, typ, desc string, priority int32) metav1.TableColumnDefinition {
	format := ""
	if name == "Name" {
		format = "name"
	}
	return metav1.TableColumnDefinition{Name: name, Type: typ, Format: format, Description: desc, Priority: priority}
}

func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func containersImages(cs []corev1.Container) (string, string) {
	var n, i []string
	for _, c := range cs {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func selectorString(s *metav1.LabelSelector) string {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil || s == nil {
		return "<none>"
	}
	return orNone(sel.String())
}

func tableFor(kindName string) *tablePrinter {
	switch kindName {
	case "Pod":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
				col("Status", "string", "The aggregate status of the containers in this pod.", 0),
				col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
				col("Node", "string", "NodeName is a request to schedule this pod onto a specific node.", 1),
				col("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node.", 1),
				col("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				p := o.(*corev1.Pod)
				ready, status, restarts := podStatusSummary(p, now)
				gates := "<none>"
				if len(p.Spec.ReadinessGates) > 0 {
					gates = fmt.Sprintf("0/%d", len(p.Spec.ReadinessGates))
				}
				return []interface{}{p.Name, ready, status, restarts, age(p.CreationTimestamp, now),
					orNone(p.Status.PodIP), orNone(p.Spec.NodeName), orNone(p.Status.NominatedNodeName), gates}
			},
		}
	case "Deployment":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Ready", "string", "Number of the pod with ready state", 0),
				col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
				col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("Containers", "string", "Names of each container in the template.", 1),
				col("Images", "string", "Images referenced by each container in the template.", 1),
				col("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				d := o.(*appsv1.Deployment)
				want := int32(0)
				if d.Spec.Replicas != nil {
					want = *d.Spec.Replicas
				}
				c, i := containersImages(d.Spec.Template.Spec.Containers)
				return []interface{}{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want),
					int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas), age(d.CreationTimestamp, now),
					c, i, selectorString(d.Spec.Selector)}
			},
		}
	case "ReplicaSet":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Desired", "integer", "Replicas is the number of desired replicas.", 0),
				col("Current", "integer", "Replicas is the most recently observed number of replicas.", 0),
				col("Ready", "integer", "The number of ready replicas for this replica set.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("Containers", "string", "Names of each container in the template.", 1),
				col("Images", "string", "Images referenced by each container in the template.", 1),
				col("Selector", "string", "Selector is a label query over pods that should match the replica count.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				rs := o.(*appsv1.ReplicaSet)
				want := int32(0)
				if rs.Spec.Replicas != nil {
					want = *rs.Spec.Replicas
				}
				c, i := containersImages(rs.Spec.Template.Spec.Containers)
				return []interface{}{rs.Name, int64(want), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas),
					age(rs.CreationTimestamp, now), c, i, selectorString(rs.Spec.Selector)}
			},
		}
	case "DaemonSet":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Desired", "integer", "The total number of nodes that should be running the daemon pod.", 0),
				col("Current", "integer", "The number of nodes that are running at least one daemon pod.", 0),
				col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more running and ready.", 0),
				col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod", 0),
				col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more available.", 0),
				col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("Containers", "string", "Names of each container in the template.", 1),
				col("Images", "string", "Images referenced by each container in the template.", 1),
				col("Selector", "string", "A label query over pods that are managed by the daemon set.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				ds := o.(*appsv1.DaemonSet)
				c, i := containersImages(ds.Spec.Template.Spec.Containers)
				return []interface{}{ds.Name, int64(ds.Status.DesiredNumberScheduled), int64(ds.Status.CurrentNumberScheduled),
					int64(ds.Status.NumberReady), int64(ds.Status.UpdatedNumberScheduled), int64(ds.Status.NumberAvailable),
					orNone(labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector)), age(ds.CreationTimestamp, now),
					c, i, selectorString(ds.Spec.Selector)}
			},
		}
	case "Service":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Type", "string", "type determines how the Service is exposed.", 0),
				col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly.", 0),
				col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0),
				col("Port(s)", "string", "The list of ports that are exposed by this service.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("Selector", "string", "Route service traffic to pods with label keys and values matching this selector.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				s := o.(*corev1.Service)
				return []interface{}{s.Name, string(s.Spec.Type), orNone(s.Spec.ClusterIP), serviceExternalIP(s),
					servicePorts(s), age(s.CreationTimestamp, now), orNone(labels.FormatLabels(s.Spec.Selector))}
			},
		}
	case "Node":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Status", "string", "The status of the node", 0),
				col("Roles", "string", "The roles of the node", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
				col("Version", "string", "Kubelet Version reported by the node.", 0),
				col("Internal-IP", "string", "List of internal IPs for the node.", 1),
				col("External-IP", "string", "List of external IPs for the node.", 1),
				col("OS-Image", "string", "OS image reported by the node from /etc/os-release.", 1),
				col("Kernel-Version", "string", "Kernel version reported by the node.", 1),
				col("Container-Runtime", "string", "Container runtime version reported by the node.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				n := o.(*corev1.Node)
				return []interface{}{n.Name, nodeStatus(n), nodeRoles(n), age(n.CreationTimestamp, now),
					n.Status.NodeInfo.KubeletVersion, nodeAddress(n, corev1.NodeInternalIP), nodeAddress(n, corev1.NodeExternalIP),
					n.Status.NodeInfo.OSImage, n.Status.NodeInfo.KernelVersion, n.Status.NodeInfo.ContainerRuntimeVersion}
			},
		}
	case "Namespace":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Status", "string", "The status of the namespace", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				n := o.(*corev1.Namespace)
				return []interface{}{n.Name, string(n.Status.Phase), age(n.CreationTimestamp, now)}
			},
		}
	case "Event":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Last Seen", "string", "Time when this Event was last seen", 0),
				col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
				col("Reason", "string", "This should be a short, machine understandable string that gives the reason for this event being generated.", 0),
				col("Object", "string", "The object that this event is about.", 0),
				col("Subobject", "string", "The subobject that this event is about.", 1),
				col("Source", "string", "The component reporting this event.", 1),
				col("Message", "string", "A human-readable description of the status of this operation.", 0),
				col("First Seen", "string", "The time at which the event was first recorded.", 1),
				col("Count", "string", "The number of times this event has occurred.", 1),
				col("Name", "string", "Name must be unique within a namespace.", 1),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				e := o.(*corev1.Event)
				last := e.LastTimestamp
				if last.IsZero() {
					last = metav1.NewTime(e.EventTime.Time)
				}
				if last.IsZero() {
					last = e.CreationTimestamp
				}
				first := e.FirstTimestamp
				if first.IsZero() {
					first = last
				}
				obj := strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
				src := e.Source.Component
				if e.Source.Host != "" {
					src += ", " + e.Source.Host
				}
				if src == "" {
					src = e.ReportingController
				}
				return []interface{}{age(last, now), e.Type, e.Reason, obj, e.InvolvedObject.FieldPath, src,
					strings.TrimSpace(e.Message), age(first, now), strconv.Itoa(int(e.Count)), e.Name}
			},
		}
	case "ConfigMap":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Data", "string", "Data contains the configuration data.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				c := o.(*corev1.ConfigMap)
				return []interface{}{c.Name, int64(len(c.Data) + len(c.BinaryData)), age(c.CreationTimestamp, now)}
			},
		}
	case "Secret":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Type", "string", "The type of the secret", 0),
				col("Data", "string", "The number of data entries in the secret", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				s := o.(*corev1.Secret)
				return []interface{}{s.Name, string(s.Type), int64(len(s.Data)), age(s.CreationTimestamp, now)}
			},
		}
	case "Endpoints":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Endpoints", "string", "Endpoints of the service", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				e := o.(*corev1.Endpoints)
				var list []string
				for _, ss := range e.Subsets {
					for _, a := range ss.Addresses {
						if len(ss.Ports) == 0 {
							list = append(list, a.IP)
						}
						for _, p := range ss.Ports {
							list = append(list, fmt.Sprintf("%s:%d", a.IP, p.Port))
						}
					}
				}
				return []interface{}{e.Name, orNone(truncList(list, 3)), age(e.CreationTimestamp, now)}
			},
		}
	case "EndpointSlice":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("AddressType", "string", "Type of address carried by this EndpointSlice.", 0),
				col("Ports", "string", "Ports advertised by this EndpointSlice.", 0),
				col("Endpoints", "string", "Endpoints included in this EndpointSlice.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				s := o.(*discoveryv1.EndpointSlice)
				var ports, addrs []string
				for _, p := range s.Ports {
					if p.Port != nil {
						ports = append(ports, strconv.Itoa(int(*p.Port)))
					}
				}
				for _, e := range s.Endpoints {
					addrs = append(addrs, e.Addresses...)
				}
				return []interface{}{s.Name, string(s.AddressType), orUnset(strings.Join(ports, ",")),
					orUnset(truncList(addrs, 3)), age(s.CreationTimestamp, now)}
			},
		}
	case "ServiceAccount":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				s := o.(*corev1.ServiceAccount)
				return []interface{}{s.Name, int64(len(s.Secrets)), age(s.CreationTimestamp, now)}
			},
		}
	case "Lease":
		return &tablePrinter{
			columns: []metav1.TableColumnDefinition{
				col("Name", "string", "Name must be unique within a namespace.", 0),
				col("Holder", "string", "The holder of the lease.", 0),
				col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
			},
			row: func(o runtime.Object, now time.Time) []interface{} {
				l := o.(*coordinationv1.Lease)
				h := ""
				if l.Spec.HolderIdentity != nil {
					h = *l.Spec.HolderIdentity
				}
				return []interface{}{l.Name, h, age(l.CreationTimestamp, now)}
			},
		}
	}
	return nil
}

// defaultTable is the table of kinds without their own printer.
var defaultTableColumns = []metav1.TableColumnDefinition{
	col("Name", "string", "Name must be unique within a namespace.", 0),
	col("Created At", "date", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
}

func orUnset(s string) string {
	if s == "" {
		return "<unset>"
	}
	return s
}

func truncList(l []string, max int) string {
	if len(l) > max {
		return strings.Join(l[:max], ",") + fmt.Sprintf(" + %d more...", len(l)-max)
	}
	return strings.Join(l, ",")
}

func podStatusSummary(p *corev1.Pod, now time.Time) (string, string, string) {
	restarts := 0
	ready := 0
	var lastRestart time.Time
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	initializing := false
	for i, c := range p.Status.InitContainerStatuses {
		restarts += int(c.RestartCount)
		if c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.FinishedAt.After(lastRestart) {
			lastRestart = c.LastTerminationState.Terminated.FinishedAt.Time
		}
		switch {
		case c.State.Terminated != nil && c.State.Terminated.ExitCode == 0:
			continue
		case c.State.Terminated != nil:
			if c.State.Terminated.Reason != "" {
				reason = "Init:" + c.State.Terminated.Reason
			} else {
				reason = fmt.Sprintf("Init:ExitCode:%d", c.State.Terminated.ExitCode)
			}
			initializing = true
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + c.State.Waiting.Reason
			initializing = true
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(p.Spec.InitContainers))
			initializing = true
		}
		break
	}
	if !initializing {
		hasRunning := false
		for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
			c := p.Status.ContainerStatuses[i]
			restarts += int(c.RestartCount)
			if c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.FinishedAt.After(lastRestart) {
				lastRestart = c.LastTerminationState.Terminated.FinishedAt.Time
			}
			switch {
			case c.State.Waiting != nil && c.State.Waiting.Reason != "":
				reason = c.State.Waiting.Reason
			case c.State.Terminated != nil && c.State.Terminated.Reason != "":
				reason = c.State.Terminated.Reason
			case c.State.Terminated != nil && c.State.Terminated.Signal != 0:
				reason = fmt.Sprintf("Signal:%d", c.State.Terminated.Signal)
			case c.State.Terminated != nil:
				reason = fmt.Sprintf("ExitCode:%d", c.State.Terminated.ExitCode)
			case c.Ready && c.State.Running != nil:
				hasRunning = true
				ready++
			case c.State.Running != nil:
				hasRunning = true
			}
		}
		if reason == "Completed" && hasRunning {
			reason = "Running"
		}
	}
	if p.DeletionTimestamp != nil {
		if p.Status.Reason == "NodeLost" {
			reason = "Unknown"
		} else {
			reason = "Terminating"
		}
	}
	r := strconv.Itoa(restarts)
	if restarts > 0 && !lastRestart.IsZero() {
		r = fmt.Sprintf("%d (%s ago)", restarts, duration.HumanDuration(now.Sub(lastRestart)))
	}
	return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), reason, r
}

func serviceExternalIP(s *corev1.Service) string {
	var ips []string
	switch s.Spec.Type {
	case corev1.ServiceTypeExternalName:
		return s.Spec.ExternalName
	case corev1.ServiceTypeLoadBalancer:
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ips = append(ips, in.IP)
			} else if in.Hostname != "" {
				ips = append(ips, in.Hostname)
			}
		}
		ips = append(ips, s.Spec.ExternalIPs...)
		if len(ips) == 0 {
			return "<pending>"
		}
	default:
		ips = s.Spec.ExternalIPs
	}
	return orNone(strings.Join(ips, ","))
}

func servicePorts(s *corev1.Service) string {
	var out []string
	for _, p := range s.Spec.Ports {
		v := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort != 0 {
			v = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
		out = append(out, v)
	}
	return orNone(strings.Join(out, ","))
}

func nodeStatus(n *corev1.Node) string {
	var st []string
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				st = append(st, "Ready")
			} else {
				st = append(st, "NotReady")
			}
		}
	}
	if len(st) == 0 {
		st = append(st, "Unknown")
	}
	if n.Spec.Unschedulable {
		st = append(st, "SchedulingDisabled")
	}
	return strings.Join(st, ",")
}

func nodeRoles(n *corev1.Node) string {
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	if r := n.Labels["kubernetes.io/role"]; r != "" {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	return orNone(strings.Join(roles, ","))
}

func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}
