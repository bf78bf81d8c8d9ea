package image

import "errors"

var (
	// ErrNotFound means no image in the store matches a reference, or the
	// registry has no such image.
	ErrNotFound = errors.New("image not found")
	// ErrAmbiguous means a short image ID prefix matches several images.
	ErrAmbiguous = errors.New("ambiguous image ID prefix")
	// ErrInUse means an image cannot be removed because a container uses it.
	ErrInUse = errors.New("image is in use")
	// ErrPlatform means neither an index nor an image offers this machine's platform.
	ErrPlatform = errors.New("no image for this platform")
	// ErrDigestMismatch means content does not hash to the digest that names it.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnsafePath means a layer entry would be written outside the layer
	// root (a "../" path, or a path through a symlink).
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrBadArchive means an archive is not a readable docker-save or OCI-layout tar.
	ErrBadArchive = errors.New("invalid image archive")
	// ErrBadReference means an image reference cannot be parsed.
	ErrBadReference = errors.New("invalid image reference")
)
