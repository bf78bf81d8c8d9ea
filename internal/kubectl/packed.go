//go:build orch_kubectl

package kubectl

import _ "embed"

// kubectlGz is bin/kubectl.gz, produced by `make` (see the Makefile).
//
//go:embed kubectl.gz
var kubectlGz []byte

func packedKubectl() []byte { return kubectlGz }
