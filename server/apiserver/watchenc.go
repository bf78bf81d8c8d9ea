package apiserver

import (
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// eventEncoder writes the events of one watch, reusing its buffers from
// event to event: the embedded object's encoding, the WatchEvent's, and
// the protobuf serializer's scratch memory (runtime.Allocator; without one
// it allocates a new buffer for every object it encodes). A watch of
// in-process informers carries every change of its kind, so these were a
// tenth of the garbage of a burst of creates.
type eventEncoder struct {
	framer   io.Writer       // the stream's frame writer
	envelope runtime.Encoder // metav1.WatchEvent, in the stream's format
	embedded runtime.Encoder // the event's object
	alloc    runtime.Allocator
	obj, ev  bytesBuffer
}

// encodeObject encodes obj as the next event's object and returns the
// bytes, valid until the next call.
func (e *eventEncoder) encodeObject(obj runtime.Object) ([]byte, error) {
	e.obj.b = e.obj.b[:0]
	err := e.encode(e.embedded, obj, &e.obj)
	return e.obj.b, err
}

// cachedObject returns item, a list item encoding from the JSON cache, as
// the next event's object (with its kind and apiVersion); the bytes are
// valid until the next call.
func (e *eventEncoder) cachedObject(gvk schema.GroupVersionKind, item []byte) []byte {
	e.obj.b = withTypeMeta(e.obj.b[:0], gvk, item)
	return e.obj.b
}

// write frames an event of type typ carrying raw, the object's encoding.
func (e *eventEncoder) write(typ string, raw []byte) error {
	e.ev.b = e.ev.b[:0]
	if err := e.encode(e.envelope, &metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: raw}}, &e.ev); err != nil {
		return err
	}
	_, err := e.framer.Write(e.ev.b)
	return err
}

func (e *eventEncoder) encode(enc runtime.Encoder, obj runtime.Object, w io.Writer) error {
	if ea, ok := enc.(runtime.EncoderWithAllocator); ok {
		return ea.EncodeWithAllocator(obj, w, &e.alloc)
	}
	return enc.Encode(obj, w)
}
