// Package charttest checks charts/voik. It renders the chart with the
// pinned helm (.bin/helm, built by `make tools`; HELM overrides it), decodes
// every manifest strictly into the k8s.io/api types (an unknown or duplicate
// field is an error), checks what would silently not work (selectors that
// miss their pods, mounts without volumes, named ports that do not exist),
// and asserts what the chart promises: a replication group of its pods, the
// volume claim, probes, security context and the VOIK_* environment, kept
// in step with the settings table of docs/settings.md. It checks the schema (bad
// values must fail it), the PrometheusRule's and the dashboard's queries
// (parsed, and the alerts evaluated, by Prometheus's own code), and the
// sidecar-mode values for the NATS chart (against a NATS server with their
// permissions).
//
// Then it creates every rendered object through a real kube-apiserver on
// etcd, both on 127.0.0.1 and built by `make tools` into .bin/ (ETCD and
// KUBE_APISERVER override them): a server-side dry run and a real create,
// in namespaces that enforce Pod Security's restricted profile.
//
// It is a module of its own so that the voik module gains no Kubernetes
// dependencies. `make chart-test` runs it.
package charttest
