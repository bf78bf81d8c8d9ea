package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runChild is the child side of the process tests.
//
//	storm: 32 goroutines write (unique creates, and updates of a few shared
//	       keys) until killed, printing "C|U key revision" after each
//	       acknowledged write.
//	hold:  open the store, print "ready", keep it open until stdin closes.
func runChild(role, path string) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := Open(Config{Path: path, HistorySize: 5000}, log)
	if err != nil {
		return err
	}
	defer db.Close()
	switch role {
	case "hold":
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		return nil
	case "storm":
		var mu sync.Mutex
		emit := func(line string) {
			mu.Lock()
			defer mu.Unlock()
			_, _ = os.Stdout.WriteString(line) // one write(2) per line
		}
		ctx := context.Background()
		errc := make(chan error, 32)
		for g := range 32 {
			go func() {
				for n := 0; ; n++ {
					if n%4 == 3 {
						key := fmt.Sprintf("/shared/%d", g%4)
						rev, err := db.Update(ctx, key, value(key, n), 0)
						if errors.Is(err, ErrNotFound) {
							rev, err = db.Create(ctx, key, value(key, n))
							if errors.Is(err, ErrExists) {
								continue
							}
						}
						if err != nil {
							errc <- err
							return
						}
						emit(fmt.Sprintf("U %s %d\n", key, rev))
						continue
					}
					key := fmt.Sprintf("/storm/%d/%d/%d", os.Getpid(), g, n)
					rev, err := db.Create(ctx, key, value(key, n))
					if err != nil {
						errc <- err
						return
					}
					emit(fmt.Sprintf("C %s %d\n", key, rev))
				}
			}()
		}
		return <-errc
	}
	return fmt.Errorf("unknown child role %q", role)
}

// value is a 1 KB value that names its key.
func value(key string, n int) []byte {
	v := []byte(key + "|" + strconv.Itoa(n) + "|")
	for len(v) < 1024 {
		v = append(v, 'x')
	}
	return v
}

func childCmd(t *testing.T, role, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ORCH_STORE_CHILD="+role, "ORCH_STORE_PATH="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestCrashSafety kills a writer process mid-storm (SIGKILL) several times
// and checks after each that every acknowledged write is on disk, that the
// revision never goes backwards and that the file passes bbolt's check.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is long")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	var lastRev int64
	for iter := range 5 {
		cmd := childCmd(t, "storm", path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 300 + rand.IntN(3000)
		type ack struct {
			kind, key string
			rev       int64
		}
		var acks []ack
		sc := bufio.NewScanner(out)
		killed := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 {
				continue // a torn last line
			}
			rev, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("child printed %q", sc.Text())
			}
			acks = append(acks, ack{f[0], f[1], rev})
			if !killed && len(acks) >= killAfter {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		werr := cmd.Wait()
		if !killed {
			t.Fatalf("child exited before the kill: %v", werr)
		}

		db, err := Open(Config{Path: path, HistorySize: 5000}, testLogger(t))
		if err != nil {
			t.Fatalf("iteration %d: reopen after SIGKILL: %v", iter, err)
		}
		ctx := ctxT(t)
		var maxAck int64
		for _, a := range acks {
			maxAck = max(maxAck, a.rev)
			kv, err := db.Get(ctx, a.key)
			if err != nil {
				t.Fatalf("iteration %d: acknowledged %s %s at %d lost: %v", iter, a.kind, a.key, a.rev, err)
			}
			if !strings.HasPrefix(string(kv.Value), a.key+"|") {
				t.Fatalf("iteration %d: %s holds %.40q", iter, a.key, kv.Value)
			}
			if a.kind == "C" && (kv.CreateRevision != a.rev || kv.ModRevision != a.rev) {
				t.Fatalf("iteration %d: %s acknowledged at %d, holds %d/%d", iter, a.key, a.rev, kv.CreateRevision, kv.ModRevision)
			}
			if a.kind == "U" && kv.ModRevision < a.rev {
				t.Fatalf("iteration %d: %s acknowledged at %d, holds %d", iter, a.key, a.rev, kv.ModRevision)
			}
		}
		rev := db.Revision()
		if rev < maxAck || rev < lastRev {
			t.Fatalf("iteration %d: revision %d after reopen; acknowledged up to %d, previous run ended at %d", iter, rev, maxAck, lastRev)
		}
		lastRev = rev
		// The store keeps working after the crash.
		if _, err := db.Create(ctx, fmt.Sprintf("/after/%d", iter), []byte("x")); err != nil {
			t.Fatal(err)
		}
		lastRev++
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		checkFile(t, path)
		t.Logf("iteration %d: %d acknowledged writes checked, revision %d", iter, len(acks), rev)
	}
}

// TestInUse: a second process (and a second handle in this one) opening the
// same file fails with ErrInUse naming the file, within the open timeout.
func TestInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	cmd := childCmd(t, "hold", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	start := time.Now()
	_, err = Open(Config{Path: path, OpenTimeout: 300 * time.Millisecond}, testLogger(t))
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), path) {
		t.Fatalf("open of a file held by another process: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("ErrInUse took %v", d)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	// Released: opens now; and a second handle in the same process is refused.
	db := openTestDB(t, Config{Path: path})
	_, err = Open(Config{Path: path, OpenTimeout: 100 * time.Millisecond}, testLogger(t))
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second open in process: %v", err)
	}
	mustCreate(t, db, "/still/works", "x")
}
