// Package openapi generates the OpenAPI v2 (swagger 2.0) and v3 documents
// that describe orch's API, by reflection over the Go types of the served
// kinds (k8s.io/api and apimachinery), and serves them at /openapi/v2 and
// /openapi/v3 the way kube-apiserver does.
//
// Stock kubectl reads these documents: it looks for the fieldValidation
// query parameter on PATCH operations (apply), for the patch strategies of
// list fields (x-kubernetes-patch-merge-key, x-kubernetes-patch-strategy)
// when it computes strategic-merge patches, and for the field descriptions
// in kubectl explain. Definition names, operation ids and vendor extensions
// follow upstream's generated documents so that those lookups succeed.
//
// The caller passes the served resources ([]Resource); nothing about the
// set of kinds is hard-coded here. BuildV2 and BuildV3 return the encoded
// documents; Handler builds them lazily on first request and serves them
// with the content negotiation, ETags and hash redirects clients expect.
package openapi
