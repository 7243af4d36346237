// Package harness starts what voik's end-to-end tests, benchmarks and soaks
// need: an embedded NATS server on a random port, voik in-process or as a
// child process (for SIGKILL), clients, and waits on conditions. Every
// helper takes a TB (a *testing.T, *testing.B, or a program's own runner),
// cleans up after itself, and holds no globals. It does not import
// testing, so that programs built on it (cmd/voikbench) do not link it.
package harness
