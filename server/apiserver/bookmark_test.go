package apiserver

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// A list or watch naming a revision the store reaches a moment later waits
// for it instead of failing; one that never comes fails with the timeout
// kube-apiserver gives.
func TestRevisionAheadWaits(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	next := strconv.FormatInt(ts.st.Revision()+1, 10)
	done := make(chan error, 1)
	go func() {
		_, err := ts.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{ResourceVersion: next})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := ts.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("list at the next revision: %v", err)
	}
	far := strconv.FormatInt(ts.st.Revision()+1000, 10)
	// Plain HTTP: client-go would retry the 504 as its Retry-After says.
	resp, err := http.Get(ts.http.URL + "/api/v1/namespaces/default/configmaps?resourceVersion=" + far)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "Too large resource version") {
		t.Errorf("list far ahead: %d %s", resp.StatusCode, body)
	}
}
