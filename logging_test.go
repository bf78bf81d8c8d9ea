package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

func TestRoutineErrorsDemoted(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		log := slog.New(routineHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})})
		closed := fmt.Errorf("read tcp 1.2.3.4:5->6.7.8.9:6443: %w", net.ErrClosed)
		log.Error("Error on socket receive", "err", closed)
		log.Error("Error on socket receive", "err", errors.New("connection reset by peer"))
		log.Error("something else", "err", closed)
		out := buf.String()
		if strings.Contains(out, "level=ERROR msg=\"Error on socket receive\" err=\"read tcp") {
			t.Errorf("level %v: a closed connection logged as an error:\n%s", level, out)
		}
		if !strings.Contains(out, "connection reset by peer") || !strings.Contains(out, "something else") {
			t.Errorf("level %v: real errors lost:\n%s", level, out)
		}
		if got := strings.Contains(out, "level=DEBUG"); got != (level == slog.LevelDebug) {
			t.Errorf("level %v: debug line present = %v:\n%s", level, got, out)
		}
	}
}
