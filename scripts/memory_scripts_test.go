package scripts

import (
	"os/exec"
	"testing"
)

// TestMemoryScriptsShellcheck lints the bash helpers of the memory work
// (idle-memory.sh, deadcode.sh) and of the API benchmark (bench-api.sh);
// their shebang picks the dialect.
func TestMemoryScriptsShellcheck(t *testing.T) {
	scripts := []string{"idle-memory.sh", "deadcode.sh", "bench-api.sh"}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck not installed")
	}
	if out, err := exec.Command(sc, scripts...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
