package apiserver

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
)

// A metadata watch (the garbage collector's informers) decodes every
// event, bookmarks included, as PartialObjectMetadata.
func TestMetadataWatchBookmarks(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.cfg.BookmarkInterval = 50 * time.Millisecond
	mc, err := metadata.NewForConfig(ts.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cms := mc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("default")
	w, err := cms.Watch(ctx, metav1.ListOptions{AllowWatchBookmarks: true, ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed before a bookmark")
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch error: %v", ev.Object)
			}
			if ev.Type != watch.Bookmark {
				continue
			}
			pom, ok := ev.Object.(*metav1.PartialObjectMetadata)
			if !ok {
				t.Fatalf("bookmark is a %T", ev.Object)
			}
			if pom.ResourceVersion == "" {
				t.Error("bookmark without a resourceVersion")
			}
			return
		case <-ctx.Done():
			t.Fatal("no bookmark within 10 s")
		}
	}
}
