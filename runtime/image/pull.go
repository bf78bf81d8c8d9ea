package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// Progress is a progress report of one layer of a pull.
type Progress struct {
	Ref      string // the normalised reference being pulled
	Layer    string // the layer blob's digest
	Total    int64  // blob size (0 if unknown)
	Complete int64  // bytes read so far
	Done     bool   // the layer is unpacked (or was already present)
	Cached   bool   // the layer was already present
}

// PullOptions tune a pull.
type PullOptions struct {
	// Progress, if set, is called as layers download (at most every
	// 512 KiB per layer, and when a layer is done). Calls are serialised.
	Progress func(Progress)
}

// progressStep is how often Progress is reported per layer.
const progressStep = 512 << 10

// Pull fetches ref (name[:tag] or name@digest; "busybox" is
// docker.io/library/busybox:latest) for this platform, trying registry
// mirrors in order and then the registry itself, and adds it to the store.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	r, err := parseReference(ref)
	if err != nil {
		return nil, err
	}
	regs, err := LoadRegistries(s.cfg.RegistriesFile)
	if err != nil {
		return nil, err
	}
	var errs []error
	notFound := true
	for _, ep := range regs.endpoints(r) {
		img, err := s.pullFrom(ctx, r, ep, regs, opts)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.Warn("pull from endpoint failed", "ref", r.String(), "endpoint", ep.host, "mirror", ep.mirror, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", ep.host, err))
		if !errors.Is(err, ErrNotFound) {
			notFound = false
		}
	}
	err = errors.Join(errs...)
	if notFound {
		return nil, fmt.Errorf("pull %s: %w: %w", r.String(), ErrNotFound, err)
	}
	return nil, fmt.Errorf("pull %s: %w", r.String(), err)
}

func (s *Store) pullFrom(ctx context.Context, r reference, ep endpoint, regs *Registries, opts PullOptions) (*Image, error) {
	var nopts []name.Option
	if ep.insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo := ep.host + "/" + ep.repo
	var nref name.Reference
	var err error
	if r.Digest != "" {
		nref, err = name.NewDigest(repo+"@"+r.Digest, nopts...)
	} else {
		nref, err = name.NewTag(repo+":"+r.Tag, nopts...)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReference, err)
	}
	ropts, err := regs.remoteOptions(ep.host)
	if err != nil {
		return nil, err
	}
	ropts = append(ropts, remote.WithContext(ctx), remote.WithUserAgent("orch"))

	desc, err := remote.Get(nref, ropts...)
	if err != nil {
		return nil, remoteErr(err)
	}
	top := desc.Digest.String()
	blobs := map[string][]byte{}
	var img v1.Image
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, remoteErr(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, remoteErr(err)
		}
		child, err := s.pickPlatform(im)
		if err != nil {
			return nil, err
		}
		if img, err = idx.Image(child.Digest); err != nil {
			return nil, remoteErr(err)
		}
		blobs[top] = desc.Manifest
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, remoteErr(err)
		}
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", desc.MediaType)
	}
	if r.Digest != "" && top != r.Digest {
		return nil, fmt.Errorf("manifest: %w: asked for %s, got %s", ErrDigestMismatch, r.Digest, top)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, remoteErr(err)
	}
	mdigest := sha256Hash(rawManifest)
	m, err := v1.ParseManifest(strings.NewReader(string(rawManifest)))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrBadArchive, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, remoteErr(err)
	}
	if err := verifyBlob(cfg, m.Config.Digest, "config"); err != nil {
		return nil, err
	}
	digests := make([]*v1.Hash, len(m.Layers))
	sizes := make([]int64, len(m.Layers))
	for i, l := range m.Layers {
		d := l.Digest
		digests[i], sizes[i] = &d, l.Size
	}
	p, err := s.newPending(cfg, digests, sizes, func(i int) (io.ReadCloser, error) {
		l, err := img.LayerByDigest(m.Layers[i].Digest)
		if err != nil {
			return nil, remoteErr(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, remoteErr(err)
		}
		return rc, nil
	})
	if err != nil {
		return nil, err
	}
	for d, b := range blobs {
		p.blobs[d] = b
	}
	p.blobs[mdigest.String()] = rawManifest
	p.img.ManifestDigest = mdigest.String()
	if r.Tag != "" {
		t := r
		t.Digest = ""
		p.img.RepoTags = []string{t.String()}
	}
	p.img.RepoDigests = []string{r.Name() + "@" + top, r.Name() + "@" + mdigest.String()}

	s.log.Info("pulling image", "ref", r.String(), "endpoint", ep.host, "digest", top, "layers", len(m.Layers))
	imgs, err := s.finish(ctx, []*pending{p}, r.String(), opts.Progress)
	if err != nil {
		return nil, err
	}
	return imgs[0], nil
}

// unpackAll fetches and unpacks the missing layers of p, a few at a
// time, and returns the chain IDs it created (also on error). The caller
// holds leases on them.
func (s *Store) unpackAll(ctx context.Context, p *pending, ref string, report func(Progress)) ([]string, error) {
	var created []string
	var mu sync.Mutex
	emit := func(pr Progress) {
		if report == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		report(pr)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.PullConcurrency)
	for _, l := range p.layers {
		digest := l.spec.DiffID.String()
		if l.spec.Digest != nil {
			digest = l.spec.Digest.String()
		}
		if s.hasLayer(l.spec.ChainID) {
			emit(Progress{Ref: ref, Layer: digest, Total: l.size, Complete: l.size, Done: true, Cached: true})
			continue
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			var last int64
			open := func() (io.ReadCloser, error) {
				rc, err := l.open()
				if err != nil {
					return nil, err
				}
				return ctxReader{gctx, rc}, nil
			}
			made, err := s.unpackLayer(l.spec, open, func(n int64) {
				if n-last >= progressStep {
					last = n
					emit(Progress{Ref: ref, Layer: digest, Total: l.size, Complete: n})
				}
			})
			if made {
				mu.Lock()
				created = append(created, l.spec.ChainID)
				mu.Unlock()
			}
			if err != nil {
				return fmt.Errorf("layer %s: %w", digest, err)
			}
			emit(Progress{Ref: ref, Layer: digest, Total: l.size, Complete: l.size, Done: true})
			return nil
		})
	}
	err := g.Wait()
	return created, err
}

// remoteErr marks registry "not found" answers with ErrNotFound.
func remoteErr(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			}
		}
	}
	return err
}

// pickPlatform chooses this machine's manifest from an index: same OS and
// architecture, the exact variant preferred, then no variant, then any
// variant if we want none, then (32-bit ARM) the highest lower variant.
func (s *Store) pickPlatform(im *v1.IndexManifest) (v1.Descriptor, error) {
	want := s.platform
	best, bestScore := v1.Descriptor{}, -1
	var offered []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		p := *d.Platform
		offered = append(offered, p.String())
		if p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		score := 0
		switch {
		case p.Variant == want.Variant:
			score = 100
		case p.Variant == "":
			score = 50
		case want.Variant == "":
			score = 40
		case want.Architecture == "arm" && len(p.Variant) == 2 && p.Variant < want.Variant:
			score = 10 + int(p.Variant[len(p.Variant)-1]-'0')
		default:
			continue
		}
		if score > bestScore {
			best, bestScore = d, score
		}
	}
	if bestScore < 0 {
		slices.Sort(offered)
		return v1.Descriptor{}, fmt.Errorf("%w: want %s, index offers [%s]", ErrPlatform, want, strings.Join(slices.Compact(offered), ", "))
	}
	return best, nil
}
