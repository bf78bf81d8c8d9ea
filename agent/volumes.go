package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// errVolume marks volume set-up errors (event FailedMount, the pod waits
// in ContainerCreating and is retried).
var errVolume = errors.New("volume set-up failed")

// fileEntry is one file of a projected volume.
type fileEntry struct {
	data []byte
	mode os.FileMode
}

// volumeManager prepares a pod's volumes under dir/<volume name>.
type volumeManager struct {
	dir     string
	objects objectSource
}

// volumeSkip reports a volume source the agent does not project (with the
// reason for an event).
type volumeSkip struct{ volume, reason string }

// setup prepares every volume of pod (idempotently: configMap, secret,
// downwardAPI and projected contents are rewritten only when they
// changed) and returns the host path of each volume by name.
func (vm *volumeManager) setup(pod *corev1.Pod, podIPs, hostIPs []string) (map[string]string, []volumeSkip, error) {
	paths := make(map[string]string, len(pod.Spec.Volumes))
	var skips []volumeSkip
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		p, skip, err := vm.setupOne(pod, v, podIPs, hostIPs)
		if err != nil {
			return nil, skips, fmt.Errorf("%w: volume %q: %w", errVolume, v.Name, err)
		}
		if skip != "" {
			skips = append(skips, volumeSkip{v.Name, skip})
		}
		paths[v.Name] = p
	}
	return paths, skips, nil
}

func (vm *volumeManager) setupOne(pod *corev1.Pod, v *corev1.Volume, podIPs, hostIPs []string) (string, string, error) {
	dir := filepath.Join(vm.dir, v.Name)
	switch {
	case v.HostPath != nil:
		return v.HostPath.Path, "", checkHostPath(v.HostPath)
	case v.EmptyDir != nil:
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			var size int64
			if v.EmptyDir.SizeLimit != nil {
				size = v.EmptyDir.SizeLimit.Value()
			}
			return dir, "", ensureTmpfs(dir, size)
		}
		return dir, "", os.MkdirAll(dir, 0o777)
	case v.ConfigMap != nil:
		files, err := vm.configMapFiles(pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode)
		if err != nil {
			return "", "", err
		}
		return dir, "", writeAtomic(dir, files)
	case v.Secret != nil:
		files, err := vm.secretFiles(pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode)
		if err != nil {
			return "", "", err
		}
		if err := ensureTmpfs(dir, 0); err != nil {
			return "", "", err
		}
		return dir, "", writeAtomic(dir, files)
	case v.DownwardAPI != nil:
		files, err := downwardFiles(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode, podIPs, hostIPs)
		if err != nil {
			return "", "", err
		}
		return dir, "", writeAtomic(dir, files)
	case v.Projected != nil:
		files := map[string]fileEntry{}
		skip := ""
		for _, src := range v.Projected.Sources {
			var part map[string]fileEntry
			var err error
			switch {
			case src.ConfigMap != nil:
				part, err = vm.configMapFiles(pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, v.Projected.DefaultMode)
			case src.Secret != nil:
				part, err = vm.secretFiles(pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, v.Projected.DefaultMode)
			case src.DownwardAPI != nil:
				part, err = downwardFiles(pod, src.DownwardAPI.Items, v.Projected.DefaultMode, podIPs, hostIPs)
			case src.ServiceAccountToken != nil:
				skip = "serviceAccountToken projection is not supported by orch yet; " + src.ServiceAccountToken.Path + " is not written"
			default:
				skip = "unsupported projected volume source"
			}
			if err != nil {
				return "", "", err
			}
			maps.Copy(files, part)
		}
		return dir, skip, writeAtomic(dir, files)
	}
	return "", "", fmt.Errorf("unsupported volume type (orch supports emptyDir, hostPath, configMap, secret, downwardAPI, projected)")
}

func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	if !filepath.IsAbs(hp.Path) {
		return fmt.Errorf("hostPath %q is not absolute", hp.Path)
	}
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if errors.Is(err, fs.ErrNotExist) {
			return os.MkdirAll(hp.Path, 0o755)
		}
		if err == nil && !fi.IsDir() {
			return fmt.Errorf("hostPath type check failed: %s is not a directory", hp.Path)
		}
		return err
	case corev1.HostPathFileOrCreate:
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		if err == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("hostPath type check failed: %s is not a file", hp.Path)
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("hostPath type check failed: %w", err)
	}
	ok := false
	m := fi.Mode()
	switch t {
	case corev1.HostPathDirectory:
		ok = m.IsDir()
	case corev1.HostPathFile:
		ok = m.IsRegular()
	case corev1.HostPathSocket:
		ok = m&fs.ModeSocket != 0
	case corev1.HostPathCharDev:
		ok = m&fs.ModeCharDevice != 0
	case corev1.HostPathBlockDev:
		ok = m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0
	default:
		return fmt.Errorf("unknown hostPath type %q", t)
	}
	if !ok {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, t)
	}
	return nil
}

func ensureTmpfs(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return err
	}
	if st.Dev != parent.Dev {
		return nil // already mounted
	}
	opts := "mode=0777"
	if size > 0 {
		opts += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

func fileMode(item *int32, def *int32, fallback os.FileMode) os.FileMode {
	if item != nil {
		return os.FileMode(*item) & 0o777
	}
	if def != nil {
		return os.FileMode(*def) & 0o777
	}
	return fallback
}

func projectKeys(data map[string][]byte, items []corev1.KeyToPath, def *int32, what string, optional bool) (map[string]fileEntry, error) {
	out := map[string]fileEntry{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = fileEntry{data: v, mode: fileMode(nil, def, 0o644)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("configmap references non-existent config key: %s in %s", it.Key, what)
		}
		out[it.Path] = fileEntry{data: v, mode: fileMode(it.Mode, def, 0o644)}
	}
	return out, nil
}

func (vm *volumeManager) configMapFiles(ns, name string, items []corev1.KeyToPath, optional *bool, def *int32) (map[string]fileEntry, error) {
	cm, err := vm.objects.ConfigMap(ns, name)
	if err != nil {
		if isOptional(optional) && isNotFound(err) {
			return map[string]fileEntry{}, nil
		}
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return projectKeys(data, items, def, "ConfigMap "+ns+"/"+name, isOptional(optional))
}

func (vm *volumeManager) secretFiles(ns, name string, items []corev1.KeyToPath, optional *bool, def *int32) (map[string]fileEntry, error) {
	s, err := vm.objects.Secret(ns, name)
	if err != nil {
		if isOptional(optional) && isNotFound(err) {
			return map[string]fileEntry{}, nil
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return projectKeys(s.Data, items, def, "Secret "+ns+"/"+name, isOptional(optional))
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def *int32, podIPs, hostIPs []string) (map[string]fileEntry, error) {
	out := map[string]fileEntry{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = podField(pod, podIPs, hostIPs, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := findContainer(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, fmt.Errorf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			v, err = resourceField(c, it.ResourceFieldRef, nil)
		default:
			err = fmt.Errorf("downwardAPI %s: no fieldRef or resourceFieldRef", it.Path)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = fileEntry{data: []byte(v), mode: fileMode(it.Mode, def, 0o644)}
	}
	return out, nil
}

// writeAtomic publishes files in dir as upstream's AtomicWriter: the
// payload goes into a fresh timestamped directory, the "..data" symlink
// is swapped to it with a rename, and every top-level entry is a symlink
// through "..data". Readers see the old or the new set, never a mix. A
// payload equal to the current one is not rewritten.
func writeAtomic(dir string, files map[string]fileEntry) error {
	for p := range files {
		if err := validPayloadPath(p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dataLink := filepath.Join(dir, "..data")
	if cur, err := os.Readlink(dataLink); err == nil && samePayload(filepath.Join(dir, cur), files) {
		return nil
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tsName := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.") + hex.EncodeToString(rnd[:])
	tsDir := filepath.Join(dir, tsName)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	for p, f := range files {
		full := filepath.Join(tsDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil { // WriteFile's mode is subject to umask
			return err
		}
	}
	old, _ := os.Readlink(dataLink)
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(tsName, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return err
	}
	// User-visible names: one symlink per top-level entry.
	top := map[string]bool{}
	for p := range files {
		first, _, _ := strings.Cut(p, "/")
		top[first] = true
	}
	for name := range top {
		link := filepath.Join(dir, name)
		target := filepath.Join("..data", name)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") || top[n] {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			_ = os.Remove(filepath.Join(dir, n)) // a key that is gone
		}
	}
	if old != "" && old != tsName {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func validPayloadPath(p string) error {
	if p == "" || path.IsAbs(p) || strings.HasPrefix(p, "..") || slices.Contains(strings.Split(p, "/"), "..") || path.Clean(p) != p {
		return fmt.Errorf("invalid volume file path %q", p)
	}
	return nil
}

// samePayload reports whether dir holds exactly files.
func samePayload(dir string, files map[string]fileEntry) bool {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, ok := files[filepath.ToSlash(rel)]
		if !ok {
			return errors.New("extra")
		}
		fi, err := d.Info()
		if err != nil || fi.Mode().Perm() != f.mode {
			return errors.New("mode")
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.data) {
			return errors.New("data")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// cleanupPodVolumes unmounts the tmpfs volumes under dir and removes it.
func cleanupPodVolumes(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		for {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				break
			}
		}
	}
	return os.RemoveAll(dir)
}
