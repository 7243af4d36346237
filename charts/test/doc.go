// Package charttest checks charts/voik offline, without a cluster: it renders
// the chart with the pinned helm (.bin/helm, built by `make tools`; HELM
// overrides it), decodes every manifest strictly into the k8s.io/api types
// (an unknown or duplicate field is an error), checks what the API server
// would refuse or what would silently not work (selectors that miss their
// pods, mounts without volumes, named ports that do not exist), and asserts
// what the chart promises: the volume claim, probes, security context and
// the VOIK_* environment, kept in step with the settings table of the
// README. It also checks the schema (bad values must fail it) and the
// sidecar-mode values for the NATS chart.
//
// It is a module of its own so that the voik module gains no Kubernetes
// dependencies. `make chart-test` runs it.
package charttest
