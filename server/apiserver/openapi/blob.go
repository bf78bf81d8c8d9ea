package openapi

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// blob is a document kept gzip-compressed: the documents are megabytes of
// JSON that compress about tenfold, and every Go client (kubectl included)
// accepts gzip, so the compressed form is what is kept and usually sent.
type blob struct {
	gz   []byte
	size int
	etag string // uppercase hex SHA-512 of the uncompressed body
}

func newBlob(body []byte, etag string) (*blob, error) {
	var buf bytes.Buffer
	buf.Grow(len(body) / 6)
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("compress document: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress document: %w", err)
	}
	return &blob{gz: bytes.Clone(buf.Bytes()), size: len(body), etag: etag}, nil
}

// raw returns the uncompressed body.
func (b *blob) raw() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b.gz))
	if err != nil {
		return nil, fmt.Errorf("decompress document: %w", err)
	}
	out := make([]byte, 0, b.size)
	buf := bytes.NewBuffer(out)
	if _, err := io.Copy(buf, zr); err != nil {
		return nil, fmt.Errorf("decompress document: %w", err)
	}
	return buf.Bytes(), nil
}

// serve writes the blob as ctype, compressed when the client accepts gzip,
// answering If-None-Match with 304.
func (b *blob) serve(w http.ResponseWriter, r *http.Request, ctype string) error {
	gz := acceptsGzip(r.Header.Get("Accept-Encoding"))
	tag := b.etag
	if gz {
		tag += "-gzip" // a different representation needs a different strong ETag
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Add("Vary", "Accept-Encoding")
	h.Set("ETag", strconv.Quote(tag))
	if etagMatches(r.Header.Get("If-None-Match"), tag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if gz {
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(b.gz)))
	} else {
		h.Set("Content-Length", strconv.Itoa(b.size))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if gz {
		_, err := w.Write(b.gz)
		return err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b.gz))
	if err != nil {
		return err
	}
	_, err = io.Copy(w, zr)
	return err
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for _, clause := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(clause, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		if q, ok := qValue(params); ok && q > 0 {
			return true
		}
	}
	return false
}

// qValue is the q parameter of a header clause's parameters (1 when
// absent); ok is false when it is malformed.
func qValue(params string) (float64, bool) {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.TrimSpace(k) != "q" {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || f > 1 {
			return 0, false
		}
		return f, true
	}
	return 1, true
}

// etagMatches reports whether an If-None-Match header names tag.
func etagMatches(header, tag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == strconv.Quote(tag) {
			return true
		}
	}
	return false
}
