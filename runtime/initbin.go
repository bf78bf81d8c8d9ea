package runtime

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// initMemfdName names the memfd that holds the small init binary;
// initexec.c finds it among the parent's files by this name.
const initMemfdName = "orch-init"

// newInitMemfd makes the (empty) memfd for the small init.
func newInitMemfd() (*os.File, error) {
	fd, err := unix.MemfdCreate(initMemfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3 there is no MFD_EXEC
		fd, err = unix.MemfdCreate(initMemfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("init memfd: %w", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+initMemfdName), nil
}

// sealedInit returns a sealed, executable memfd holding what src yields,
// the small container init (internal/initbin). Sealed, it can never be
// written, so a container cannot replace the binary that runs as its (or
// another container's) init.
func sealedInit(src io.Reader) (*os.File, error) {
	f, err := newInitMemfd()
	if err != nil {
		return nil, err
	}
	if err := fillAndSeal(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("init memfd: %w", err)
	}
	return f, nil
}

func fillAndSeal(f *os.File, src io.Reader) error {
	n, err := io.Copy(f, src)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("empty init binary")
	}
	if err := f.Chmod(0o511); err != nil {
		return err
	}
	// F_SEAL_EXEC (Linux 6.3) keeps the mode as it is; older kernels lack it.
	const sealExec = 0x20
	_, _ = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, sealExec)
	_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// initSource returns the small init to run: Config.InitBinary, else the
// one built in (gzipped), else nil.
func (r *Runtime) initSource() (io.Reader, error) {
	if r.cfg.InitBinary != nil {
		return bytes.NewReader(r.cfg.InitBinary), nil
	}
	gz := packedInitGz()
	if len(gz) == 0 {
		return nil, nil
	}
	return gzip.NewReader(bytes.NewReader(gz))
}

// openInit makes the memfd of the small init when there is one to run.
// It is made when the Runtime is, so that it has a low number among this
// process's files (initexec.c looks through them in order), and filled on
// first use (a node without containers holds no copy).
func (r *Runtime) openInit() {
	if r.cfg.InitBinary == nil && len(packedInitGz()) == 0 {
		return
	}
	f, err := newInitMemfd()
	if err != nil {
		r.log.Warn("containers' inits will re-execute this binary", "err", err)
		return
	}
	r.initFile = f
}

// ensureInit fills and seals the small init's memfd before the first
// container start or exec (until then it is empty, and an init that finds
// it goes on as this binary). On failure the memfd is closed and the inits
// re-execute this binary.
func (r *Runtime) ensureInit() {
	r.initOnce.Do(func() {
		r.mu.Lock()
		f := r.initFile
		r.mu.Unlock()
		if f == nil {
			return
		}
		src, err := r.initSource()
		if err == nil {
			err = fillAndSeal(f, src)
		}
		if err != nil {
			r.log.Warn("containers' inits will re-execute this binary", "err", err)
			r.mu.Lock()
			r.initFile = nil
			r.mu.Unlock()
			f.Close()
		}
	})
}
