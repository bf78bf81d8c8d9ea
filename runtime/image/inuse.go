package image

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// MountedInUse returns an InUseFunc that reports an image in use when an
// overlay mount visible in this mount namespace has exactly the image's
// layers as its lower directories — a container rootfs built from it. It
// reads /proc/self/mountinfo once. The agent passes a predicate over the
// containers it knows instead; this one serves `orch image rm`, which has
// no container list.
func (s *Store) MountedInUse() (InUseFunc, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	layersDir := s.path("layers") + "/"
	stacks := map[string]bool{} // chain IDs lowest first, joined by ","
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		_, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields := strings.Fields(post)
		if len(fields) < 3 || fields[0] != "overlay" {
			continue
		}
		for opt := range strings.SplitSeq(fields[2], ",") {
			dirs, ok := strings.CutPrefix(opt, "lowerdir=")
			if !ok {
				continue
			}
			var chain []string
			for _, d := range strings.Split(dirs, ":") {
				rest, ok := strings.CutPrefix(unescapeMountinfo(d), layersDir)
				hexID, ok2 := strings.CutSuffix(rest, "/diff")
				if !ok || !ok2 {
					chain = nil
					break
				}
				chain = append([]string{"sha256:" + hexID}, chain...) // overlayfs lists top first
			}
			if chain != nil {
				stacks[strings.Join(chain, ",")] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
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
	used := map[string]bool{}
	for id, img := range idx.Images {
		if stacks[strings.Join(img.ChainIDs, ",")] {
			used[id] = true
		}
	}
	return func(id string) bool { return used[id] }, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for space...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
