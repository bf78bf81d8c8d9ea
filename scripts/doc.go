// Package scripts holds orch's shell scripts (install.sh for
// `curl -sfL URL | sh -`, the lab and benchmark helpers); its Go tests run
// install.sh and the scripts it writes in a throw-away root.
package scripts
