package apiserver

import (
	"bytes"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
)

// TestEventEncoderReusesBuffers: events written one after the other with
// the same buffers (a large object, then smaller ones) decode, in JSON and
// in protobuf, to exactly what was sent.
func TestEventEncoderReusesBuffers(t *testing.T) {
	s := newTestServer(t).srv
	big := testPod("big")
	big.Annotations = map[string]string{"note": strings.Repeat("x", 20000)}
	small := testPod("small")
	small.Labels = map[string]string{"app": "a"}
	status := &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired}
	sent := []struct {
		typ string
		obj runtime.Object
	}{{"ADDED", big}, {"MODIFIED", small}, {"DELETED", big}, {"ERROR", status}, {"ADDED", small}}
	for _, mt := range []string{runtime.ContentTypeJSON, runtime.ContentTypeProtobuf} {
		info, ok := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), mt)
		if !ok || info.StreamSerializer == nil {
			t.Fatalf("%s: no stream serializer", mt)
		}
		var out bytes.Buffer
		enc := &eventEncoder{
			framer:   info.StreamSerializer.Framer.NewFrameWriter(&out),
			envelope: s.codecs.EncoderForVersion(info.StreamSerializer.Serializer, schema.GroupVersion{Version: "v1"}),
			embedded: s.codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion),
		}
		for _, ev := range sent {
			raw, err := enc.encodeObject(ev.obj)
			if err != nil {
				t.Fatalf("%s: encode %T: %v", mt, ev.obj, err)
			}
			if err := enc.write(ev.typ, raw); err != nil {
				t.Fatalf("%s: write: %v", mt, err)
			}
		}
		dec := streaming.NewDecoder(info.StreamSerializer.Framer.NewFrameReader(io.NopCloser(&out)), info.StreamSerializer.Serializer)
		weKind := schema.GroupVersion{Version: "v1"}.WithKind("WatchEvent")
		for i, ev := range sent {
			var we metav1.WatchEvent
			if _, _, err := dec.Decode(&weKind, &we); err != nil {
				t.Fatalf("%s: event %d: %v", mt, i, err)
			}
			if we.Type != ev.typ {
				t.Errorf("%s: event %d type %q, want %q", mt, i, we.Type, ev.typ)
			}
			got, _, err := s.codecs.UniversalDeserializer().Decode(we.Object.Raw, nil, nil)
			if err != nil {
				t.Fatalf("%s: event %d object: %v", mt, i, err)
			}
			got.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
			want := ev.obj.DeepCopyObject()
			want.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
			if !apiequality.Semantic.DeepEqual(got, want) {
				t.Errorf("%s: event %d decodes to %#v, want %#v", mt, i, got, want)
			}
		}
		if _, _, err := dec.Decode(&weKind, &metav1.WatchEvent{}); err != io.EOF {
			t.Errorf("%s: after the events: %v, want EOF", mt, err)
		}
	}
}
