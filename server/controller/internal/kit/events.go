package kit

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/events"
	"github.com/orch-dev/orch/internal/kube"
)

// Events is an event broadcaster writing core/v1 Events (the ones kubectl
// describe shows) through client, and its recorder.
type Events struct {
	b        record.EventBroadcaster
	client   kube.Interface
	Recorder record.EventRecorder
}

// NewEvents makes a broadcaster and a recorder reporting as component.
func NewEvents(client kube.Interface, component string) *Events {
	b := events.NewBroadcaster()
	return &Events{b: b, client: client, Recorder: b.NewRecorder(kube.Scheme(), corev1.EventSource{Component: component})}
}

// Run writes events to the API until ctx ends.
func (e *Events) Run(ctx context.Context) {
	w := e.b.StartRecordingToSink(kube.EventSink{Client: e.client.CoreV1()})
	<-ctx.Done()
	w.Stop()
	e.b.Shutdown()
}
