package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
)

// DefaultRegistriesFile is where registry mirrors and credentials are read
// from (the shape of k3s's registries.yaml).
const DefaultRegistriesFile = "/etc/orch/registries.yaml"

// DefaultRoot is the store root the agent uses under a data directory.
func DefaultRoot(dataDir string) string { return filepath.Join(dataDir, "agent", "image-store") }

// DefaultImportDir is the drop-in directory of image archives under a data directory.
func DefaultImportDir(dataDir string) string { return filepath.Join(dataDir, "agent", "images") }

// Config configures a Store.
type Config struct {
	// Root is the store directory (created if missing). Required.
	Root string
	// RegistriesFile is a registries.yaml with mirrors and credentials;
	// "" or a missing file means none.
	RegistriesFile string
	// Platform images are resolved for; zero means this machine's (linux/GOARCH[/variant]).
	Platform v1.Platform
	// PullConcurrency is how many layers one pull fetches at once (default 3).
	PullConcurrency int
	// DiskUsage reports used and total bytes of the filesystem holding path;
	// nil means statfs(2). GC compares its ratio with the thresholds.
	DiskUsage func(path string) (used, total uint64, err error)
}

// InUseFunc reports whether a container uses the image with this ID
// ("sha256:<hex>"). Remove and GC never delete an image in use.
type InUseFunc func(imageID string) bool

// ImageConfig is the part of an image's config the runtime needs.
type ImageConfig struct {
	Entrypoint   []string            `json:"entrypoint,omitempty"`
	Cmd          []string            `json:"cmd,omitempty"`
	Env          []string            `json:"env,omitempty"`
	WorkingDir   string              `json:"workingDir,omitempty"`
	User         string              `json:"user,omitempty"`
	ExposedPorts map[string]struct{} `json:"exposedPorts,omitempty"`
	Volumes      map[string]struct{} `json:"volumes,omitempty"`
	Labels       map[string]string   `json:"labels,omitempty"`
	StopSignal   string              `json:"stopSignal,omitempty"`
}

// Image is an image in the store.
type Image struct {
	// ID is the config digest, "sha256:<hex>".
	ID string `json:"id"`
	// RepoTags are normalised names, "docker.io/library/busybox:stable".
	RepoTags []string `json:"repoTags,omitempty"`
	// RepoDigests are "docker.io/library/busybox@sha256:<hex>" (the digest
	// pulled by, and the platform manifest's when that differs).
	RepoDigests []string `json:"repoDigests,omitempty"`
	// ManifestDigest is the platform manifest's digest ("" for docker-save imports).
	ManifestDigest string      `json:"manifestDigest,omitempty"`
	Platform       string      `json:"platform,omitempty"`
	Config         ImageConfig `json:"config"`
	// Created is the image's creation time from its config.
	Created time.Time `json:"created,omitzero"`
	// Added is when the image was pulled or imported.
	Added time.Time `json:"added"`
	// Size is the unpacked size of its layers in bytes.
	Size int64 `json:"size"`
	// ChainIDs identify the layers, lowest first.
	ChainIDs []string `json:"chainIDs"`
	// LayerDirs are the unpacked layer directories, lowest first (filled
	// by the store, not persisted).
	LayerDirs []string `json:"-"`
}

// layerMeta is layers/<chain>/layer.json.
type layerMeta struct {
	ChainID string `json:"chainID"`
	DiffID  string `json:"diffID"`
	Parent  string `json:"parent,omitempty"`
	Digest  string `json:"digest,omitempty"` // compressed digest it was unpacked from, if known
	Size    int64  `json:"size"`
}

// indexFile is index.json.
type indexFile struct {
	Version int               `json:"version"`
	Images  map[string]*Image `json:"images"`
}

// Store is the image store. It is safe for concurrent use, also by several
// processes sharing a root (metadata updates take a flock).
type Store struct {
	cfg      Config
	log      *slog.Logger
	platform v1.Platform

	mu       sync.Mutex // guards the fields below and serialises metadata updates in-process
	leases   map[string]int
	lastUsed map[string]time.Time
	cache    *indexFile
	cacheKey fileKey

	unpacks singleflight.Group
}

type fileKey struct {
	ino, size int64
	mtime     int64
}

// Open opens (creating if needed) the store at cfg.Root and removes
// staging directories left by dead processes.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if cfg.Root == "" {
		return nil, errors.New("image store: root directory is required")
	}
	if log == nil {
		return nil, errors.New("image store: logger is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	cfg.Root = root
	if cfg.PullConcurrency <= 0 {
		cfg.PullConcurrency = 3
	}
	if cfg.DiskUsage == nil {
		cfg.DiskUsage = statfsUsage
	}
	s := &Store{cfg: cfg, log: log, leases: map[string]int{}, lastUsed: map[string]time.Time{}}
	s.platform = cfg.Platform
	if s.platform.Architecture == "" {
		s.platform = HostPlatform()
	}
	for _, d := range []string{root, s.path("blobs", "sha256"), s.path("layers"), s.path("tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := s.cleanStaging(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root is the store's root directory.
func (s *Store) Root() string { return s.cfg.Root }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.cfg.Root}, elem...)...)
}

func (s *Store) layerDir(chainID string) string {
	return s.path("layers", strings.TrimPrefix(chainID, "sha256:"))
}

// HostPlatform is this machine's platform: linux/GOARCH, with the ARM
// variant where the kernel tells it.
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm":
		p.Variant = armVariant()
	case "arm64":
		p.Variant = "v8"
	}
	return p
}

func armVariant() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "CPU architecture" {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 5 {
				return "v" + strconv.Itoa(min(n, 8))
			}
		}
	}
	return ""
}

// newStaging makes a staging directory tmp/<pid>.<random>.
func (s *Store) newStaging() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	d := s.path("tmp", strconv.Itoa(os.Getpid())+"."+hex.EncodeToString(b[:]))
	if err := os.Mkdir(d, 0o700); err != nil {
		return "", fmt.Errorf("create staging dir: %w", err)
	}
	return d, nil
}

// cleanStaging removes staging entries whose process is gone.
func (s *Store) cleanStaging() error {
	ents, err := os.ReadDir(s.path("tmp"))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range ents {
		pidStr, _, _ := strings.Cut(e.Name(), ".")
		pid, err := strconv.Atoi(pidStr)
		if err == nil && pid != os.Getpid() && unix.Kill(pid, 0) != unix.ESRCH {
			continue // another live process's staging
		}
		if err := os.RemoveAll(s.path("tmp", e.Name())); err != nil {
			return fmt.Errorf("image store: remove stale %s: %w", e.Name(), err)
		}
	}
	return nil
}

// lock takes the in-process mutex and the cross-process flock; the
// returned func releases both.
func (s *Store) lock() (func(), error) {
	s.mu.Lock()
	f, err := os.OpenFile(s.path("lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		_ = f.Close()
		s.mu.Unlock()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() {
		_ = f.Close() // releases the flock
		s.mu.Unlock()
	}, nil
}

// load reads index.json (cached while its inode, size and mtime are
// unchanged). The caller holds the lock and must not modify the result
// unless it saves it.
func (s *Store) load() (*indexFile, error) {
	p := s.path("index.json")
	var st unix.Stat_t
	if err := unix.Stat(p, &st); errors.Is(err, unix.ENOENT) {
		return &indexFile{Version: 1, Images: map[string]*Image{}}, nil
	} else if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	key := fileKey{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim.Nano()}
	if s.cache != nil && s.cacheKey == key {
		return s.cache, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	idx := &indexFile{}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("image index %s is corrupt: %w", p, err)
	}
	if idx.Images == nil {
		idx.Images = map[string]*Image{}
	}
	s.cache, s.cacheKey = idx, key
	return idx, nil
}

// save writes index.json atomically. The caller holds the lock.
func (s *Store) save(idx *indexFile) error {
	b, err := json.MarshalIndent(idx, "", " ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path("index.json"), b); err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	s.cache = nil
	return nil
}

// writeFileAtomic writes b to p via a synced temp file and rename.
func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// hasLayer reports whether the unpacked layer chainID is present.
func (s *Store) hasLayer(chainID string) bool {
	_, err := os.Stat(filepath.Join(s.layerDir(chainID), "layer.json"))
	return err == nil
}

func (s *Store) readLayerMeta(chainID string) (layerMeta, error) {
	var m layerMeta
	b, err := os.ReadFile(filepath.Join(s.layerDir(chainID), "layer.json"))
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// lease marks chain IDs as in flight so GC does not prune them before the
// image referencing them is registered; the returned func releases them.
func (s *Store) lease(chainIDs []string) func() {
	s.mu.Lock()
	for _, c := range chainIDs {
		s.leases[c]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, c := range chainIDs {
			if s.leases[c]--; s.leases[c] <= 0 {
				delete(s.leases, c)
			}
		}
		s.mu.Unlock()
	}
}

// putBlob stores verified small content (manifest, config, index) by digest.
func (s *Store) putBlob(digest string, b []byte) error {
	h, err := v1.NewHash(digest)
	if err != nil {
		return err
	}
	p := s.path("blobs", h.Algorithm, h.Hex)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(p, b)
}

// register adds or updates images in one index write: tags and digests
// move to the new images. Every layer must exist.
func (s *Store) register(imgs []*Image) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	for _, img := range imgs {
		for _, c := range img.ChainIDs {
			if !s.hasLayer(c) {
				return fmt.Errorf("register %s: layer %s vanished (removed concurrently); retry", img.ID, c)
			}
		}
	}
	old, err := s.load()
	if err != nil {
		return err
	}
	idx := cloneIndex(old)
	for _, img := range imgs {
		cur := idx.Images[img.ID]
		if cur == nil {
			c := *img
			c.RepoTags, c.RepoDigests = nil, nil
			cur = &c
			idx.Images[img.ID] = cur
		}
		cur.Added = img.Added
		for _, t := range img.RepoTags {
			for id, other := range idx.Images {
				if id != img.ID {
					other.RepoTags = slices.DeleteFunc(other.RepoTags, func(x string) bool { return x == t })
				}
			}
			if !slices.Contains(cur.RepoTags, t) {
				cur.RepoTags = append(cur.RepoTags, t)
			}
		}
		for _, d := range img.RepoDigests {
			if !slices.Contains(cur.RepoDigests, d) {
				cur.RepoDigests = append(cur.RepoDigests, d)
			}
		}
		if cur.ManifestDigest == "" {
			cur.ManifestDigest = img.ManifestDigest
		}
		sort.Strings(cur.RepoTags)
		sort.Strings(cur.RepoDigests)
	}
	return s.save(idx)
}

func cloneIndex(idx *indexFile) *indexFile {
	c := &indexFile{Version: 1, Images: make(map[string]*Image, len(idx.Images))}
	for id, img := range idx.Images {
		ic := *img
		ic.RepoTags = slices.Clone(img.RepoTags)
		ic.RepoDigests = slices.Clone(img.RepoDigests)
		c.Images[id] = &ic
	}
	return c
}

// find resolves ref against idx: an ID or unique ID prefix, a name[:tag],
// or a name@digest.
func find(idx *indexFile, ref string) (*Image, error) {
	if hexID, ok := idPrefix(ref); ok {
		var match *Image
		for id, img := range idx.Images {
			if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hexID) {
				if match != nil {
					return nil, fmt.Errorf("%w: %q", ErrAmbiguous, ref)
				}
				match = img
			}
		}
		if match != nil {
			return match, nil
		}
	}
	r, err := parseReference(ref)
	if err != nil {
		if _, ok := idPrefix(ref); ok {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
		}
		return nil, err
	}
	for _, img := range idx.Images {
		if r.Digest != "" {
			if slices.Contains(img.RepoDigests, r.Name()+"@"+r.Digest) {
				return img, nil
			}
			continue
		}
		if slices.Contains(img.RepoTags, r.String()) {
			return img, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, r.String())
}

// withDirs returns a copy of img with LayerDirs filled in.
func (s *Store) withDirs(img *Image) *Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.ChainIDs = slices.Clone(img.ChainIDs)
	c.LayerDirs = make([]string, len(img.ChainIDs))
	for i, ch := range img.ChainIDs {
		c.LayerDirs[i] = filepath.Join(s.layerDir(ch), "diff")
	}
	return &c
}

// Resolve finds an image by name[:tag], name@digest, ID or unique ID
// prefix, and returns it with its layer directories (lowest first).
func (s *Store) Resolve(ctx context.Context, ref string) (*Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.load()
	if err != nil {
		return nil, err
	}
	img, err := find(idx, ref)
	if err != nil {
		return nil, err
	}
	s.lastUsed[img.ID] = time.Now()
	return s.withDirs(img), nil
}

// Has reports whether ref resolves to an image in the store (for
// imagePullPolicy IfNotPresent). Errors other than not-found are returned.
func (s *Store) Has(ctx context.Context, ref string) (bool, error) {
	_, err := s.Resolve(ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List returns all images, sorted by first tag then ID.
func (s *Store) List(ctx context.Context) ([]*Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.load()
	if err != nil {
		return nil, err
	}
	out := make([]*Image, 0, len(idx.Images))
	for _, img := range idx.Images {
		out = append(out, s.withDirs(img))
	}
	sort.Slice(out, func(i, j int) bool {
		ti, tj := firstOr(out[i].RepoTags, "~"), firstOr(out[j].RepoTags, "~")
		if ti != tj {
			return ti < tj
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// Remove deletes an image by reference. A tag of an image that has other
// tags is only untagged; otherwise the image is removed — refused with
// ErrInUse when inUse reports it in use — and layers no other image uses
// are deleted. It returns the removed image's ID ("" if only untagged).
func (s *Store) Remove(ctx context.Context, ref string, inUse InUseFunc) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	unlock, err := s.lock()
	if err != nil {
		return "", err
	}
	var trash []string
	defer func() {
		unlock()
		// Deleting layer files can take a while: not under the lock.
		if err := emptyTrash(trash); err != nil {
			s.log.Warn("delete removed layers", "err", err)
		}
	}()
	old, err := s.load()
	if err != nil {
		return "", err
	}
	img, err := find(old, ref)
	if err != nil {
		return "", err
	}
	idx := cloneIndex(old)
	cur := idx.Images[img.ID]
	if r, perr := parseReference(ref); perr == nil && r.Digest == "" && len(cur.RepoTags) > 1 && slices.Contains(cur.RepoTags, r.String()) {
		cur.RepoTags = slices.DeleteFunc(cur.RepoTags, func(t string) bool { return t == r.String() })
		return "", s.save(idx)
	}
	if inUse != nil && inUse(img.ID) {
		return "", fmt.Errorf("remove %s (%s): %w", ref, shortID(img.ID), ErrInUse)
	}
	delete(idx.Images, img.ID)
	if err := s.save(idx); err != nil {
		return "", err
	}
	delete(s.lastUsed, img.ID)
	s.log.Info("removed image", "id", img.ID, "tags", img.RepoTags)
	_, _, trash, err = s.pruneLayersLocked(idx)
	if err != nil {
		return img.ID, err
	}
	return img.ID, nil
}

// pruneLayersLocked moves layer directories no image references and no
// pull or import holds out of layers/ (an atomic rename each) and returns
// the staging directories to delete — which the caller may do after
// releasing the lock. The caller holds the lock.
func (s *Store) pruneLayersLocked(idx *indexFile) (n int, freed int64, trash []string, err error) {
	used := map[string]bool{}
	for _, img := range idx.Images {
		for _, c := range img.ChainIDs {
			used[strings.TrimPrefix(c, "sha256:")] = true
		}
	}
	for c := range s.leases {
		used[strings.TrimPrefix(c, "sha256:")] = true
	}
	ents, err := os.ReadDir(s.path("layers"))
	if err != nil {
		return 0, 0, nil, err
	}
	var errs []error
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		if m, err := s.readLayerMeta("sha256:" + e.Name()); err == nil {
			freed += m.Size
		}
		stage, err := s.newStaging()
		if err != nil {
			return n, freed, trash, err
		}
		trash = append(trash, stage)
		if err := os.Rename(s.path("layers", e.Name()), filepath.Join(stage, "layer")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if n > 0 {
		s.log.Info("pruned unreferenced layers", "count", n, "bytes", freed)
	}
	return n, freed, trash, errors.Join(errs...)
}

// emptyTrash deletes staging directories returned by pruneLayersLocked.
func emptyTrash(trash []string) error {
	var errs []error
	for _, d := range trash {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func shortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}
