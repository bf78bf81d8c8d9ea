package openapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Document sizes are reported as custom metrics: v2-bytes, v2pb-bytes,
// v3-bytes (all documents) and v3-largest-bytes.

func BenchmarkBuildV2(b *testing.B) {
	rs := testResources()
	var n int
	for b.Loop() {
		doc, err := BuildV2(rs, testInfo)
		if err != nil {
			b.Fatal(err)
		}
		n = len(doc)
	}
	b.ReportMetric(float64(n), "v2-bytes")
}

func BenchmarkV2Protobuf(b *testing.B) {
	doc, err := BuildV2(testResources(), testInfo)
	if err != nil {
		b.Fatal(err)
	}
	var n int
	for b.Loop() {
		pb, err := V2Protobuf(doc)
		if err != nil {
			b.Fatal(err)
		}
		n = len(pb)
	}
	b.ReportMetric(float64(n), "v2pb-bytes")
}

func BenchmarkBuildV3(b *testing.B) {
	rs := testResources()
	var total, largest int
	for b.Loop() {
		v3, err := BuildV3(rs, testInfo)
		if err != nil {
			b.Fatal(err)
		}
		total, largest = 0, 0
		for _, d := range v3.Docs {
			total += len(d.JSON)
			largest = max(largest, len(d.JSON))
		}
	}
	b.ReportMetric(float64(total), "v3-bytes")
	b.ReportMetric(float64(largest), "v3-largest-bytes")
}

func BenchmarkV3Protobuf(b *testing.B) {
	v3, err := BuildV3(testResources(), testInfo)
	if err != nil {
		b.Fatal(err)
	}
	doc := v3.Docs["api/v1"].JSON
	var n int
	for b.Loop() {
		pb, err := V3Protobuf(doc)
		if err != nil {
			b.Fatal(err)
		}
		n = len(pb)
	}
	b.ReportMetric(float64(n), "v3pb-core-bytes")
}

// BenchmarkHandlerColdV3 is the cost of the first kubectl request on a new
// server: build every v3 document, compress them, serve api/v1.
func BenchmarkHandlerColdV3(b *testing.B) {
	rs := testResources()
	var gz int
	for b.Loop() {
		h, err := NewHandler(rs, testInfo, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/openapi/v3/api/v1", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		v, _ := h.getV3()
		gz = 0
		for _, d := range v.docs {
			gz += len(d.gz)
		}
	}
	b.ReportMetric(float64(gz), "v3-gzip-bytes")
}

// BenchmarkHandlerWarmV3 serves an already built document.
func BenchmarkHandlerWarmV3(b *testing.B) {
	h, err := NewHandler(testResources(), testInfo, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.getV3(); err != nil {
		b.Fatal(err)
	}
	for _, enc := range []string{"gzip", "identity"} {
		b.Run(enc, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, "/openapi/v3/api/v1", nil)
				req.Header.Set("Accept-Encoding", enc)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}

// BenchmarkHandlerColdV2Protobuf builds the v2 JSON and protobuf documents as a first
// request for protobuf does.
func BenchmarkHandlerColdV2Protobuf(b *testing.B) {
	rs := testResources()
	var gz int
	for b.Loop() {
		h, err := NewHandler(rs, testInfo, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/openapi/v2", nil)
		req.Header.Set("Accept", ContentTypeV2Protobuf)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		j, _ := h.getV2()
		p, _ := h.getV2Protobuf()
		gz = len(j.gz) + len(p.gz)
	}
	b.ReportMetric(float64(gz), "v2-json+pb-gzip-bytes")
}
