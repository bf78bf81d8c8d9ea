package kit

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/events"
)

// Events is an event broadcaster writing core/v1 Events (the ones kubectl
// describe shows) through client, and its recorder.
type Events struct {
	b        record.EventBroadcaster
	client   kubernetes.Interface
	Recorder record.EventRecorder
}

// NewEvents makes a broadcaster and a recorder reporting as component.
func NewEvents(client kubernetes.Interface, component string) *Events {
	b := events.NewBroadcaster()
	return &Events{b: b, client: client, Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component})}
}

// Run writes events to the API until ctx ends.
func (e *Events) Run(ctx context.Context) {
	w := e.b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: e.client.CoreV1().Events("")})
	<-ctx.Done()
	w.Stop()
	e.b.Shutdown()
}
