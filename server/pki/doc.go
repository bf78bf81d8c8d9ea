// Package pki owns the cluster's certificates and join token: a cluster CA
// generated on first start and kept in the data directory, the API server's
// serving certificate, the admin client certificate, per-node client
// certificates issued on demand, the k3s-format join token that pins the CA
// (K10<sha256 of the CA PEM>::server:<secret>) and kubeconfig files.
//
// Everything cryptographic comes from the standard library. Load is the
// entry point; a *PKI is immutable after Load and safe for concurrent use.
package pki
