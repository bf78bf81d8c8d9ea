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

// sealedInit returns a sealed, executable memfd holding bin, the small
// container init (internal/initbin). Sealed, it can never be written, so a
// container cannot replace the binary that runs as its (or another
// container's) init.
func sealedInit(bin []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(initMemfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3 there is no MFD_EXEC
		fd, err = unix.MemfdCreate(initMemfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("init memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+initMemfdName)
	if err := fillAndSeal(f, bin); err != nil {
		f.Close()
		return nil, fmt.Errorf("init memfd: %w", err)
	}
	return f, nil
}

func fillAndSeal(f *os.File, bin []byte) error {
	if _, err := f.Write(bin); err != nil {
		return err
	}
	if err := f.Chmod(0o511); err != nil {
		return err
	}
	// F_SEAL_EXEC (Linux 6.3) keeps the mode as it is; older kernels lack it.
	const sealExec = 0x20
	_, _ = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, sealExec)
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// gunzip returns the uncompressed contents of gz ("" gives nil).
func gunzip(gz []byte) ([]byte, error) {
	if len(gz) == 0 {
		return nil, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}
