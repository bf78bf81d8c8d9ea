package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// EventSink writes a client-go event recorder's core/v1 Events (it is a
// k8s.io/client-go/tools/record.EventSink), each in its own namespace.
type EventSink struct {
	Client CoreV1Interface
}

// Create creates e.
func (s EventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	return s.Client.Events(e.Namespace).Create(context.Background(), e, metav1.CreateOptions{})
}

// Update replaces e (a repeated event's count and last timestamp).
func (s EventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	return s.Client.Events(e.Namespace).Update(context.Background(), e, metav1.UpdateOptions{})
}

// Patch applies the strategic merge patch data to the existing event old.
func (s EventSink) Patch(old *corev1.Event, data []byte) (*corev1.Event, error) {
	return s.Client.Events(old.Namespace).Patch(context.Background(), old.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
}
