//go:build !orch_init

package runtime

// packedInitGz is nil in builds without the orch_init tag: containers'
// inits then run the whole binary.
func packedInitGz() []byte { return nil }
