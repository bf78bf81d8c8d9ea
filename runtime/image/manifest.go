package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layerSource is one layer of an image being added: what it must be and
// how to open its blob.
type layerSource struct {
	spec layerSpec
	size int64 // blob size if known, for progress
	open func() (io.ReadCloser, error)
}

// pending is an image whose layers are about to be unpacked and which is
// then registered.
type pending struct {
	img    *Image
	layers []layerSource
	blobs  map[string][]byte // digest → verified manifest/config/index bytes to keep
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// verifyBlob checks that b hashes to want.
func verifyBlob(b []byte, want v1.Hash, what string) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s: unsupported digest algorithm %q", what, want.Algorithm)
	}
	if got := sha256Hash(b); got != want {
		return fmt.Errorf("%s: %w: expected %s, got %s", what, ErrDigestMismatch, want, got)
	}
	return nil
}

// platformMatches reports whether an image config's platform can run
// here; an image that does not say is assumed to.
func (s *Store) platformMatches(p *v1.Platform) bool {
	if p == nil {
		return true
	}
	if p.OS != "" && p.OS != s.platform.OS {
		return false
	}
	return p.Architecture == "" || p.Architecture == s.platform.Architecture
}

// newPending parses and checks an image config and builds the image
// record and layer specs; open(i) opens layer i's blob.
func (s *Store) newPending(cfgRaw []byte, digests []*v1.Hash, sizes []int64, open func(i int) (io.ReadCloser, error)) (*pending, error) {
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		return nil, fmt.Errorf("%w: image config: %w", ErrBadArchive, err)
	}
	if !s.platformMatches(cf.Platform()) {
		return nil, fmt.Errorf("%w: image is for %s, this machine is %s", ErrPlatform, cf.Platform(), s.platform)
	}
	diffIDs := cf.RootFS.DiffIDs
	if len(diffIDs) != len(digests) {
		return nil, fmt.Errorf("%w: config lists %d layers (diff_ids), manifest %d", ErrBadArchive, len(diffIDs), len(digests))
	}
	id := sha256Hash(cfgRaw)
	chains := chainIDs(diffIDs)
	img := &Image{
		ID:       id.String(),
		Platform: platformString(cf.Platform()),
		Created:  cf.Created.Time,
		Added:    time.Now().UTC(),
		ChainIDs: chains,
		Config: ImageConfig{
			Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir, User: cf.Config.User, ExposedPorts: cf.Config.ExposedPorts,
			Volumes: cf.Config.Volumes, Labels: cf.Config.Labels, StopSignal: cf.Config.StopSignal,
		},
	}
	p := &pending{img: img, blobs: map[string][]byte{id.String(): cfgRaw}}
	for i := range diffIDs {
		parent := ""
		if i > 0 {
			parent = chains[i-1]
		}
		var size int64
		if i < len(sizes) {
			size = sizes[i]
		}
		p.layers = append(p.layers, layerSource{
			spec: layerSpec{ChainID: chains[i], Parent: parent, DiffID: diffIDs[i], Digest: digests[i]},
			size: size,
			open: func() (io.ReadCloser, error) { return open(i) },
		})
	}
	return p, nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	return p.String()
}

// finish unpacks the pending images' layers (skipping those present) and
// registers the images with their blobs, all or nothing. Leases keep GC
// off the new layers until the images are registered.
func (s *Store) finish(ctx context.Context, ps []*pending, ref string, report func(Progress)) ([]*Image, error) {
	var chains []string
	for _, p := range ps {
		chains = append(chains, p.img.ChainIDs...)
	}
	slices.Sort(chains)
	release := s.lease(slices.Compact(chains))
	defer release()
	var created []string
	imgs, err := func() ([]*Image, error) {
		for _, p := range ps {
			made, err := s.unpackAll(ctx, p, ref, report)
			created = append(created, made...)
			if err != nil {
				return nil, err
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return s.commit(ps)
	}()
	if err != nil {
		if derr := s.discardLayers(created); derr != nil {
			s.log.Warn("discarding layers of a failed operation", "err", derr)
		}
		return nil, err
	}
	return imgs, nil
}

// commit stores blobs, fills sizes and registers images.
func (s *Store) commit(ps []*pending) ([]*Image, error) {
	var imgs []*Image
	for _, p := range ps {
		var size int64
		for _, c := range p.img.ChainIDs {
			m, err := s.readLayerMeta(c)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", c, err)
			}
			size += m.Size
		}
		p.img.Size = size
		for d, b := range p.blobs {
			if err := s.putBlob(d, b); err != nil {
				return nil, fmt.Errorf("store blob %s: %w", d, err)
			}
		}
		slices.Sort(p.img.RepoTags)
		p.img.RepoTags = slices.Compact(p.img.RepoTags)
		slices.Sort(p.img.RepoDigests)
		p.img.RepoDigests = slices.Compact(p.img.RepoDigests)
		imgs = append(imgs, p.img)
	}
	if err := s.register(imgs); err != nil {
		return nil, err
	}
	out := make([]*Image, len(imgs))
	for i, img := range imgs {
		out[i] = s.withDirs(img)
		s.log.Info("added image", "id", img.ID, "tags", img.RepoTags, "layers", len(img.ChainIDs), "size", img.Size)
	}
	return out, nil
}
