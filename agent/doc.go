// Package agent is orch's node agent, the kubelet role: it registers the
// Node (capacity, addresses, node info, conditions), renews its Lease in
// kube-node-lease, and runs the pods bound to the node on the container
// runtime — sandbox, pod network, image pulls, volumes, environment,
// init and app containers with restart back-off, probes, lifecycle hooks,
// graceful deletion — reporting their status and events through the API.
//
// The agent talks to the control plane only through a kube client it
// is given: `orch agent` builds one from the credentials [Join] obtains,
// `orch server` passes its in-process one. When the API server is away the
// agent keeps its pods running: nothing is stopped because of an API error,
// and the informers re-list when the server is back.
//
// Use:
//
//	a, err := agent.New(cfg, client, agent.Deps{Runtime: rt, Images: store, Network: netFactory}, log)
//	err = a.Run(ctx)
//
// [NodeAPI] serves the kubelet-style paths the API server forwards
// (containerLogs/<ns>/<pod>/<container>, exec/...).
package agent
