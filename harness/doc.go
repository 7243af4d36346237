// Package harness starts what voik's end-to-end tests, benchmarks and soaks
// need: an embedded NATS server on a random port, voik in-process or as a
// child process (for SIGKILL), clients, and waits on conditions. Every
// helper takes a testing.TB, cleans up after itself, and holds no globals.
package harness
