package runtime

import (
	"strings"
	"testing"
)

func TestRunTrueAndExitCodes(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "codes")
	st, _ := e.run(t, sb, e.ctr("true", "/bin/true"))
	expectExit(t, st, 0, ReasonCompleted)
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	st, out := e.run(t, sb, e.ctr("three", "sh", "-c", "echo out; echo err >&2; exit 3"))
	expectExit(t, st, 3, ReasonError)
	if out != "out\nerr\n" && out != "err\nout\n" {
		t.Errorf("logs = %q", out)
	}
	if !strings.HasSuffix(st.LogPath, "/default_codes_"+sb.Config.UID+"/three/0.log") {
		t.Errorf("log path %s", st.LogPath)
	}
}
