package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// chainIDs computes the chain IDs of a stack of diffIDs (lowest first):
// chain(0) = diffID(0), chain(n) = sha256(chain(n-1) + " " + diffID(n)).
func chainIDs(diffIDs []v1.Hash) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d.String()
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + d.String()))
		out[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out
}

// layerSpec says what a layer blob must be.
type layerSpec struct {
	ChainID string
	Parent  string
	DiffID  v1.Hash  // digest of the uncompressed tar (from the image config)
	Digest  *v1.Hash // digest of the blob as stored (from the manifest), if known
}

// countingReader counts bytes and reports progress.
type countingReader struct {
	r        io.Reader
	n        int64
	progress func(n int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// unpackLayer makes sure the layer spec.ChainID is unpacked: if it is not
// yet, open() gives its blob, which is decompressed, verified against
// spec.Digest and spec.DiffID, and unpacked in a staging directory that is
// renamed into place only when everything matched. Concurrent calls for
// one chain ID share the work.
// It reports whether this call created the layer.
func (s *Store) unpackLayer(spec layerSpec, open func() (io.ReadCloser, error), progress func(int64)) (bool, error) {
	if s.hasLayer(spec.ChainID) {
		return false, nil
	}
	created := false
	_, err, _ := s.unpacks.Do(spec.ChainID, func() (any, error) {
		if s.hasLayer(spec.ChainID) {
			return nil, nil
		}
		err := s.doUnpack(spec, open, progress)
		created = err == nil
		return nil, err
	})
	return created, err
}

// ctxReader fails reads once ctx is done, so a long unpack stops promptly.
type ctxReader struct {
	ctx context.Context
	io.ReadCloser
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.ReadCloser.Read(p)
}

// discardLayers removes layers a failed operation created, unless an
// image references them or another operation holds them. The caller
// holds leases on them (one each).
func (s *Store) discardLayers(chainIDs []string) error {
	if len(chainIDs) == 0 {
		return nil
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := s.load()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, img := range idx.Images {
		for _, c := range img.ChainIDs {
			used[c] = true
		}
	}
	var errs []error
	for _, c := range chainIDs {
		if used[c] || s.leases[c] > 1 {
			continue
		}
		stage, err := s.newStaging()
		if err != nil {
			return err
		}
		if err := os.Rename(s.layerDir(c), filepath.Join(stage, "layer")); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(stage); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Store) doUnpack(spec layerSpec, open func() (io.ReadCloser, error), progress func(int64)) (err error) {
	stage, err := s.newStaging()
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(stage); rerr != nil && err == nil {
			err = fmt.Errorf("remove staging dir: %w", rerr)
		}
	}()
	diff := filepath.Join(stage, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return err
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer rc.Close()

	blobHash := sha256.New()
	cr := &countingReader{r: io.TeeReader(rc, blobHash), progress: progress}
	plain, kind, closeDec, err := decompressKind(cr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	defer closeDec()
	// An uncompressed blob is its own diff: hash it once.
	diffHash, tarStream := blobHash, plain
	if kind != "" {
		diffHash = sha256.New()
		tarStream = io.TeeReader(plain, diffHash)
	}
	x := newExtractor(diff, s.log)
	if err := x.extract(tarStream); err != nil {
		// A corrupt download shows up as a decompression or tar error;
		// say that it is corrupt when the blob's digest tells.
		if spec.Digest != nil {
			_, _ = io.Copy(io.Discard, cr)
			if herr := checkHash(blobHash, *spec.Digest, "layer blob"); herr != nil {
				return fmt.Errorf("%w (unpack: %v)", herr, err)
			}
		}
		return fmt.Errorf("unpack: %w", err)
	}
	// Hash what follows the tar end marker too, then the rest of the blob.
	if _, err := io.Copy(io.Discard, tarStream); err != nil {
		return fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	_, drainErr := io.Copy(io.Discard, cr)
	if spec.Digest != nil {
		if err := checkHash(blobHash, *spec.Digest, "layer blob"); err != nil {
			if drainErr != nil {
				return fmt.Errorf("%w (read: %v)", err, drainErr)
			}
			return err
		}
	}
	if drainErr != nil {
		return drainErr
	}
	if err := checkHash(diffHash, spec.DiffID, "layer diffID"); err != nil {
		return err
	}
	meta := layerMeta{ChainID: spec.ChainID, DiffID: spec.DiffID.String(), Parent: spec.Parent, Size: x.size}
	if spec.Digest != nil {
		meta.Digest = spec.Digest.String()
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "layer.json"), mb, 0o600); err != nil {
		return err
	}
	// One syncfs makes the unpacked files durable before the rename
	// publishes them (cheaper than an fsync per file).
	if err := syncFS(stage); err != nil {
		return err
	}
	final := s.layerDir(spec.ChainID)
	if err := os.Rename(stage, final); err != nil {
		if s.hasLayer(spec.ChainID) { // another process won the race
			return nil
		}
		return fmt.Errorf("publish layer %s: %w", spec.ChainID, err)
	}
	if err := os.Chmod(final, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(final))
}

func checkHash(h hash.Hash, want v1.Hash, what string) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s: unsupported digest algorithm %q", what, want.Algorithm)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want.Hex {
		return fmt.Errorf("%s: %w: expected %s, got sha256:%s", what, ErrDigestMismatch, want, got)
	}
	return nil
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}

// statfsUsage is the default Config.DiskUsage: used and total bytes as df
// counts them (total excludes the root-reserved blocks).
func statfsUsage(path string) (used, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	used = (st.Blocks - st.Bfree) * bs
	total = used + st.Bavail*bs
	if total == 0 {
		return 0, 0, errors.New("statfs: filesystem reports zero size")
	}
	return used, total, nil
}
