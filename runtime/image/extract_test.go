package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
	"golang.org/x/sys/unix"
)

// whiteoutImage is busybox plus a layer with files, then a layer deleting
// some (whiteout) and replacing a directory (opaque).
func whiteoutImage(t *testing.T) v1.Image {
	t.Helper()
	es, err := testimage.BusyboxEntries()
	if err != nil {
		t.Fatal(err)
	}
	l0 := must[v1.Layer](t)(testimage.Layer(es, testimage.Gzip))
	l1 := must[v1.Layer](t)(testimage.Layer([]testimage.Entry{
		testimage.Dir("data"), testimage.File("data/keep", "keep"), testimage.File("data/gone", "gone"),
		testimage.Dir("data/sub"), testimage.File("data/sub/x", "x"),
		testimage.Dir("opq"), testimage.File("opq/old1", "1"), testimage.File("opq/old2", "2"),
	}, testimage.None))
	l2 := must[v1.Layer](t)(testimage.Layer([]testimage.Entry{
		testimage.Dir("data"), testimage.Whiteout("data", "gone"), testimage.Whiteout("data", "sub"),
		testimage.Whiteout("bin", "ls"),
		testimage.Dir("opq"), testimage.Opaque("opq"), testimage.File("opq/new", "new"),
	}, testimage.Zstd))
	return must[v1.Image](t)(testimage.Image(testimage.Platform(), testimage.BusyboxConfig(), l0, l1, l2))
}

func isWhiteout(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("whiteout %s: %v", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("%s: mode %o rdev %d uid %d gid %d, want 0:0 char device owned by 0:0", p, st.Mode, st.Rdev, st.Uid, st.Gid)
	}
}

func TestWhiteoutsAndOverlay(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s := newTestStore(t)
	file := writeFile(t, func(w io.Writer) error {
		return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Name: "wh:1", Image: whiteoutImage(t)})
	})
	img := must[[]*Image](t)(s.ImportFile(ctx, file))[0]
	if len(img.LayerDirs) != 3 {
		t.Fatalf("layers %v", img.LayerDirs)
	}
	top := img.LayerDirs[2]
	isWhiteout(t, filepath.Join(top, "data/gone"))
	isWhiteout(t, filepath.Join(top, "data/sub"))
	isWhiteout(t, filepath.Join(top, "bin/ls"))
	if _, err := os.Lstat(filepath.Join(top, "data/.wh.gone")); !os.IsNotExist(err) {
		t.Errorf(".wh.gone kept: %v", err)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(top, "opq"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(top, "opq/.wh..wh..opq")); !os.IsNotExist(err) {
		t.Errorf("opaque marker kept: %v", err)
	}

	// Mount the layers with overlayfs and check the merged view.
	mnt := t.TempDir()
	upper, work, merged := filepath.Join(mnt, "upper"), filepath.Join(mnt, "work"), filepath.Join(mnt, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lower := slices.Clone(img.LayerDirs)
	slices.Reverse(lower)
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	// The mount makes the image in use for `orch image rm`.
	inUse, err := s.MountedInUse()
	if err != nil {
		t.Fatal(err)
	}
	if !inUse(img.ID) {
		t.Error("MountedInUse does not see the overlay mount")
	}
	if _, err := s.Remove(ctx, "wh:1", inUse); !errors.Is(err, ErrInUse) {
		t.Errorf("remove of mounted image: %v", err)
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(merged, p)); return err == nil }
	for p, want := range map[string]bool{
		"data/keep": true, "data/gone": false, "data/sub": false, "data/sub/x": false,
		"opq/old1": false, "opq/old2": false, "opq/new": true,
		"bin/ls": false, "bin/sh": true, "bin/busybox": true, "etc/passwd": true,
	} {
		if got := exists(p); got != want {
			t.Errorf("merged %s exists=%v, want %v", p, got, want)
		}
	}
	if b := readAll(t, filepath.Join(merged, "opq/new")); string(b) != "new" {
		t.Errorf("opq/new = %q", b)
	}
	ents, err := os.ReadDir(filepath.Join(merged, "opq"))
	if err != nil || len(ents) != 1 {
		t.Errorf("opq lists %v %v, want only new", ents, err)
	}
}

func TestExtractPreservesMetadata(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s := newTestStore(t)
	l := must[v1.Layer](t)(testimage.Layer([]testimage.Entry{
		{Name: "srv", Type: tar.TypeDir, Mode: 0o750, UID: 1000, GID: 1001},
		{Name: "srv/suid", Mode: 0o4755, UID: 0, GID: 0, Body: []byte("#!/bin/sh\n")},
		{Name: "srv/owned", Mode: 0o600, UID: 1234, GID: 5678, Body: []byte("secret")},
		{Name: "srv/attr", Mode: 0o644, Body: []byte("a"), Xattrs: map[string]string{"user.orch": "yes"}},
		testimage.Hardlink("srv/hard", "srv/owned"),
		testimage.Symlink("srv/abs", "/etc/passwd"),
		testimage.Symlink("srv/rel", "../srv/owned"),
		{Name: "srv/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "srv/fifo", Type: tar.TypeFifo, Mode: 0o640},
		{Name: "srv/sticky", Type: tar.TypeDir, Mode: 0o1777},
		testimage.File("srv/dup", "first"),
		testimage.File("srv/dup", "second"),
	}, testimage.Gzip))
	im := must[v1.Image](t)(testimage.Image(testimage.Platform(), v1.Config{}, l))
	file := writeFile(t, func(w io.Writer) error {
		return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: im, Tags: []string{"meta:1"}})
	})
	img := must[[]*Image](t)(s.ImportFile(ctx, file))[0]
	root := img.LayerDirs[0]
	st := func(p string) unix.Stat_t {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	check := func(p string, mode uint32, uid, gid uint32) {
		t.Helper()
		s := st(p)
		if s.Mode != mode || s.Uid != uid || s.Gid != gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", p, s.Mode, s.Uid, s.Gid, mode, uid, gid)
		}
	}
	check("srv", unix.S_IFDIR|0o750, 1000, 1001)
	check("srv/suid", unix.S_IFREG|0o4755, 0, 0)
	check("srv/owned", unix.S_IFREG|0o600, 1234, 5678)
	check("srv/fifo", unix.S_IFIFO|0o640, 0, 0)
	check("srv/sticky", unix.S_IFDIR|0o1777, 0, 0)
	if s := st("srv/null"); s.Mode != unix.S_IFCHR|0o666 || unix.Major(s.Rdev) != 1 || unix.Minor(s.Rdev) != 3 {
		t.Errorf("srv/null mode %o rdev %d:%d", s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	if st("srv/hard").Ino != st("srv/owned").Ino {
		t.Error("hard link is not the same inode")
	}
	if l, _ := os.Readlink(filepath.Join(root, "srv/abs")); l != "/etc/passwd" {
		t.Errorf("abs symlink %q", l)
	}
	if l, _ := os.Readlink(filepath.Join(root, "srv/rel")); l != "../srv/owned" {
		t.Errorf("rel symlink %q", l)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(root, "srv/attr"), "user.orch", buf); err != nil || string(buf[:n]) != "yes" {
		t.Logf("user xattr not preserved (filesystem may not support it): %q %v", buf[:n], err)
	}
	if b := readAll(t, filepath.Join(root, "srv/dup")); string(b) != "second" {
		t.Errorf("duplicate entry: %q, want the later one", b)
	}
	if mt := st("srv/owned").Mtim; mt.Sec != 1704164645 {
		t.Errorf("mtime %d not preserved", mt.Sec)
	}
}
