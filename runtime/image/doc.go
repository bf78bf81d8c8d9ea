// Package image is orch's image store: it pulls images from registries
// (go-containerregistry, with mirrors and credentials from a k3s-style
// registries.yaml), imports `docker save` and OCI-layout archives (plain,
// gzip or zstd, detected by magic bytes), unpacks each layer once into a
// content-addressed layer store, and hands the container runtime an image's
// config and its overlayfs lower directories.
//
// # On-disk layout
//
// The store lives under one root directory (the agent uses
// <data-dir>/agent/image-store, see DefaultRoot):
//
//	root/
//	  lock                      flock(2) serialising metadata updates across processes
//	  index.json                image metadata (written atomically: temp file, fsync, rename)
//	  blobs/sha256/<hex>        verified manifests, configs and indexes (small JSON)
//	  layers/<chainID hex>/     one unpacked layer, keyed by chain ID
//	    layer.json              diffID, chain ID, parent, size
//	    diff/                   the layer's files: an overlayfs lowerdir
//	  tmp/<pid>.<random>/       staging; stale entries of dead processes are removed at Open
//
// Compressed layer blobs are not kept: they are verified while streaming
// (compressed digest against the manifest, uncompressed diffID against the
// config) and unpacked straight into a staging directory, which is renamed
// into layers/ only when both digests match. A layer directory that exists
// is therefore complete, and index.json — written last, under the lock —
// only names layers that exist, so a crash or kill at any point leaves no
// half-registered layer or image: at worst an unreferenced layer, which
// the next Remove or GC prunes, and a stale staging directory.
//
// OCI whiteouts are converted to overlayfs form while unpacking:
// ".wh.<name>" becomes a 0:0 character device <name> and ".wh..wh..opq" sets
// the xattr trusted.overlay.opaque=y on its directory, so Image.LayerDirs
// can be given to overlayfs as lowerdirs (reversed: overlayfs wants the
// top-most first).
//
// # Use
//
//	s, err := image.Open(image.Config{Root: image.DefaultRoot(dataDir), RegistriesFile: image.DefaultRegistriesFile}, log)
//	img, err := s.Pull(ctx, "busybox:stable", image.PullOptions{})   // or s.Has / s.Resolve
//	// img.Config (Entrypoint, Cmd, Env, ...), img.ID, img.RepoDigests, img.LayerDirs (lowest first)
//	w, err := image.NewWatcher(image.WatcherConfig{Dir: image.DefaultImportDir(dataDir),
//		StateFile: filepath.Join(s.Root(), "imported.json")}, s, log)      // Run(ctx): drop-in archives
//	gc, err := image.NewGarbageCollector(image.GCConfig{Policy: image.DefaultGCPolicy}, s, inUse, log) // Run(ctx)
//
// Remove and GC take an InUseFunc from the caller (the agent knows its
// containers); MountedInUse derives one from overlay mounts for the CLI.
package image
