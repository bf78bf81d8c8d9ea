package main

import (
	"context"
	"log/slog"
	"strings"
)

// routineHandler passes records on, demoting to debug the errors that
// libraries log at error level for routine events: a stream's peer closing
// its connection at the end of a `kubectl exec` or port-forward
// (k8s.io/streaming's "Error on socket receive: use of closed network
// connection") is not a failure.
type routineHandler struct{ slog.Handler }

// routine reports whether a record is one of the routine "errors".
func routine(r slog.Record) bool {
	if r.Level < slog.LevelError || r.Message != "Error on socket receive" {
		return false
	}
	closed := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" && strings.Contains(a.Value.String(), "use of closed network connection") {
			closed = true
			return false
		}
		return true
	})
	return closed
}

func (h routineHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Errors are always looked at: one may turn out routine.
	return l >= slog.LevelError || h.Handler.Enabled(ctx, l)
}

func (h routineHandler) Handle(ctx context.Context, r slog.Record) error {
	if routine(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h routineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return routineHandler{h.Handler.WithAttrs(as)}
}

func (h routineHandler) WithGroup(name string) slog.Handler {
	return routineHandler{h.Handler.WithGroup(name)}
}
