package runtime

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

func TestProcessExited(t *testing.T) {
	cmd := exec.Command("sleep", "0.2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	ch := processExited(context.Background(), cmd.Process.Pid)
	if ch == nil {
		t.Skip("no pidfd on this kernel")
	}
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("exit of the process not seen")
	}

	// An ended context stops the watch without closing the channel.
	long := exec.Command("sleep", "60")
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = long.Process.Kill(); _ = long.Wait() }()
	ctx, cancel := context.WithCancel(context.Background())
	ch = processExited(ctx, long.Process.Pid)
	cancel()
	select {
	case <-ch:
		t.Fatal("closed for a process that runs")
	case <-time.After(100 * time.Millisecond):
	}
	if processExited(context.Background(), 1<<30) != nil {
		t.Fatal("watching a process that does not exist")
	}
}
