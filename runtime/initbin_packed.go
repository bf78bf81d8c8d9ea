//go:build orch_init

package runtime

import _ "embed"

// initGz is internal/initbin/orch-init.gz, produced by `make` (see the
// Makefile).
//
//go:embed internal/initbin/orch-init.gz
var initGz []byte

// packedInitGz is the small container init built into this binary, gzipped.
func packedInitGz() []byte { return initGz }
