//go:build !orch_kubectl

package kubectl

// packedKubectl is empty in builds without the orch_kubectl tag.
func packedKubectl() []byte { return nil }
