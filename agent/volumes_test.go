package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func readLinkTree(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteAtomicSwapsAndPrunes(t *testing.T) {
	dir := t.TempDir()
	if err := writeAtomic(dir, map[string]fileEntry{"a": {[]byte("1"), 0o644}, "sub/b": {[]byte("2"), 0o600}}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if readLinkTree(t, dir, "a") != "1" || readLinkTree(t, dir, "sub/b") != "2" {
		t.Fatal("payload not visible")
	}
	fi, _ := os.Stat(filepath.Join(dir, "sub/b"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// Same payload: nothing rewritten.
	if err := writeAtomic(dir, map[string]fileEntry{"a": {[]byte("1"), 0o644}, "sub/b": {[]byte("2"), 0o600}}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != first {
		t.Errorf("unchanged payload rewritten: %s -> %s", first, again)
	}
	// New payload: a changed, sub gone, c new; the old timestamp dir removed.
	if err := writeAtomic(dir, map[string]fileEntry{"a": {[]byte("x"), 0o644}, "c": {[]byte("3"), 0o644}}); err != nil {
		t.Fatal(err)
	}
	if readLinkTree(t, dir, "a") != "x" || readLinkTree(t, dir, "c") != "3" {
		t.Fatal("update not visible")
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("removed key still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old payload dir kept: %v", err)
	}
	for _, bad := range []string{"../x", "/abs", "a/../../b", "..data"} {
		if err := writeAtomic(dir, map[string]fileEntry{bad: {}}); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}

func TestVolumeSetup(t *testing.T) {
	dir := t.TempDir()
	vm := &volumeManager{dir: dir, objects: testObjs()}
	mode := int32(0o400)
	tr := true
	dirType := corev1.HostPathDirectory
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
				Items: []corev1.KeyToPath{{Key: "color", Path: "conf/color.txt", Mode: &mode}}}}},
			{Name: "opt", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &tr}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "down", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType}}},
		}}}
	paths, _, err := vm.setup(pod, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readLinkTree(t, paths["cfg"], "conf/color.txt"); got != "blue" {
		t.Errorf("configmap item = %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(paths["cfg"], "conf/color.txt")); fi.Mode().Perm() != 0o400 {
		t.Errorf("item mode %v", fi.Mode())
	}
	if got := readLinkTree(t, paths["down"], "labels"); got != `a="b"` {
		t.Errorf("downward labels = %q", got)
	}
	if fi, err := os.Stat(paths["scratch"]); err != nil || !fi.IsDir() {
		t.Errorf("emptyDir: %v", err)
	}
	if paths["host"] != dir {
		t.Errorf("hostPath %s", paths["host"])
	}
	// Bad input: missing configmap, bad hostPath type.
	for _, v := range []corev1.Volume{
		{Name: "x", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}},
		{Name: "y", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "nokey", Path: "k"}}}}},
		{Name: "z", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(dir, "nothing"), Type: &dirType}}},
		{Name: "w", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}},
	} {
		p := pod.DeepCopy()
		p.Spec.Volumes = []corev1.Volume{v}
		if _, _, err := vm.setup(p, nil, nil); err == nil || !strings.Contains(err.Error(), "volume set-up failed") {
			t.Errorf("volume %s: err = %v", v.Name, err)
		}
	}
}
