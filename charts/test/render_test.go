package charttest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// required is the one value the chart has no default for: the subjects to
// capture (voik's own default, >, is for its embedded server only).
var required = []string{"--set", `config.subjects=orders.>\,voik.helm-test`}

// TestSubjectsHaveNoDefault: without config.subjects the chart does not
// render, and the error says what to set.
func TestSubjectsHaveNoDefault(t *testing.T) {
	_, err := renderRaw(t, nil)
	if err == nil || !strings.Contains(err.Error(), "subjects") {
		t.Fatalf("rendered without config.subjects: %v", err)
	}
}

// TestHelmTestRunsOnlyOnACapturedSubject: the test pod publishes to
// tests.subject and waits for voik's ack, which only a captured subject
// gets; when config.subjects does not capture it the pod is left out and
// NOTES say why, rather than a test that can only fail.
func TestHelmTestRunsOnlyOnACapturedSubject(t *testing.T) {
	for _, tc := range []struct {
		subjects, subject string
		runs              bool
	}{
		{"orders.>,voik.helm-test", "voik.helm-test", true},
		{">", "voik.helm-test", true},
		{"voik.>", "voik.helm-test", true},
		{"*.helm-test", "voik.helm-test", true},
		{"orders.>, payments.*", "payments.helm-test", true},
		{"orders.>", "voik.helm-test", false},
		{"voik.helm-test.>", "voik.helm-test", false},
		{"voik.*.x", "voik.helm-test", false},
		{"voik", "voik.helm-test", false},
	} {
		out, err := renderRaw(t, nil, "--set", "config.subjects="+strings.ReplaceAll(tc.subjects, ",", "\\,"), "--set", "tests.subject="+tc.subject)
		if err != nil {
			t.Fatalf("%s: %v", tc.subjects, err)
		}
		pods := all[*corev1.Pod](decodeAll(t, out))
		if runs := len(pods) == 1; runs != tc.runs {
			t.Errorf("config.subjects %q, tests.subject %q: test pod rendered %v, want %v", tc.subjects, tc.subject, runs, tc.runs)
		}
		notes := renderNotes(t, "--set", "config.subjects="+strings.ReplaceAll(tc.subjects, ",", "\\,"), "--set", "tests.subject="+tc.subject)
		if off := strings.Contains(notes, "helm test is off"); off == tc.runs {
			t.Errorf("config.subjects %q: NOTES say the test is off: %v, want %v", tc.subjects, off, !tc.runs)
		}
	}
}

// TestDefaultValues renders the chart as `helm install` would with only
// the required value and checks what the chart promises, field by field.
func TestDefaultValues(t *testing.T) {
	manifests := render(t, nil, required...)
	for _, p := range validate(manifests) {
		t.Error(p)
	}
	chart := readChart(t)
	s := only[*appsv1.StatefulSet](t, manifests)
	pod := s.Spec.Template.Spec
	voik := container(t, pod, "voik")
	env := envMap(voik)

	t.Run("workload", func(t *testing.T) {
		if s.Spec.Replicas == nil || *s.Spec.Replicas != 3 {
			t.Errorf("replicas %v, want 3: a group that outlives one pod", s.Spec.Replicas)
		}
		// A member is ready only as leader or in-sync follower: ordered
		// starts could wait forever for a pod 0 that cannot be either.
		if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("podManagementPolicy %q, want Parallel", s.Spec.PodManagementPolicy)
		}
		if want := "ghcr.io/voik/voik:" + chart.AppVersion; voik.Image != want {
			t.Errorf("image %q, want %q (the chart's appVersion)", voik.Image, want)
		}
		if !slices.Equal(voik.Args, []string{"serve"}) {
			t.Errorf("args %q, want [serve]", voik.Args)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Error("the service account token is mounted; voik never uses it")
		}
		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Error("service links on: a Service named voik would inject VOIK_SERVICE_HOST and the like")
		}
		if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 35 {
			t.Errorf("terminationGracePeriodSeconds %v: voik may wait 30s for requests in flight, then syncs", pod.TerminationGracePeriodSeconds)
		}
	})

	t.Run("volume claim", func(t *testing.T) {
		if len(s.Spec.VolumeClaimTemplates) != 1 {
			t.Fatalf("%d claim templates, want 1", len(s.Spec.VolumeClaimTemplates))
		}
		claim := s.Spec.VolumeClaimTemplates[0]
		if !slices.Equal(claim.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("access modes %v", claim.Spec.AccessModes)
		}
		if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("10Gi")) != 0 {
			t.Errorf("storage %v, want 10Gi", got.String())
		}
		if claim.Spec.StorageClassName != nil {
			t.Errorf("storageClassName %q; empty values must leave the cluster default", *claim.Spec.StorageClassName)
		}
		mount := mountOf(t, voik, claim.Name)
		if mount.MountPath != "/data" || mount.ReadOnly {
			t.Errorf("claim mounted at %q (read-only %v), want /data read-write", mount.MountPath, mount.ReadOnly)
		}
		if got := env["VOIK_DATA_DIR"].Value; got != mount.MountPath {
			t.Errorf("VOIK_DATA_DIR %q is not the claim's mount %q", got, mount.MountPath)
		}
	})

	t.Run("probes", func(t *testing.T) {
		if len(voik.Ports) != 1 || voik.Ports[0].Name != "http" || voik.Ports[0].ContainerPort != 8333 {
			t.Fatalf("ports %+v, want http 8333", voik.Ports)
		}
		if got := env["VOIK_HTTP_ADDR"].Value; got != ":8333" {
			t.Errorf("VOIK_HTTP_ADDR %q, want :8333 (the container port)", got)
		}
		checkProbes(t, voik, "http")
	})

	t.Run("security context", func(t *testing.T) {
		checkPodSecurity(t, pod.SecurityContext, true)
		checkContainerSecurity(t, voik.SecurityContext)
	})

	t.Run("resources", func(t *testing.T) {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := voik.Resources.Requests[name]; !ok {
				t.Errorf("no %s request", name)
			}
		}
		limit, ok := voik.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			t.Fatal("no memory limit")
		}
		// The capture buffer is memory: a limit under it kills voik just when
		// it falls behind.
		if pending := resource.MustParse(strings.Replace(env["VOIK_PENDING_BYTES"].Value, "B", "", 1)); limit.Cmp(pending) <= 0 {
			t.Errorf("memory limit %v is not above VOIK_PENDING_BYTES %v", limit.String(), pending.String())
		}
	})

	t.Run("environment", func(t *testing.T) {
		for name, want := range map[string]string{
			"VOIK_NATS_URL": "nats://nats:4222", "VOIK_SUBJECTS": "orders.>,voik.helm-test", "VOIK_API_PREFIX": "VOIK.API",
			"VOIK_SYNC": "batch", "VOIK_PENDING_MSGS": "1000000", "VOIK_LOG_FORMAT": "json",
		} {
			if got := env[name]; got.Value != want || got.ValueFrom != nil {
				t.Errorf("%s = %q, want %q", name, got.Value, want)
			}
		}
		for name := range env {
			if strings.HasPrefix(name, "VOIK_NATS_") && !slices.Contains(natsConnectionSettings, name) {
				t.Errorf("%s set with no auth or TLS in the values", name)
			}
		}
		if len(voik.VolumeMounts) != 1 || len(pod.Volumes) != 0 {
			t.Errorf("mounts %v volumes %v: want the data claim alone", voik.VolumeMounts, pod.Volumes)
		}
	})

	t.Run("group", func(t *testing.T) {
		checkGroupEnv(t, env, "history-hist-voik", "3")
		if got, want := env["VOIK_LEASE"].Value, "5s"; got != want {
			t.Errorf("VOIK_LEASE %q, want %q", got, want)
		}
		if got, want := env["VOIK_JOURNAL_KEEP"].Value, "1000000"; got != want {
			t.Errorf("VOIK_JOURNAL_KEEP %q, want %q", got, want)
		}
	})

	t.Run("spread", func(t *testing.T) {
		checkSpread(t, s, "soft", "soft")
	})

	t.Run("services and budget", func(t *testing.T) {
		services := all[*corev1.Service](manifests)
		if len(services) != 2 {
			t.Fatalf("%d Services, want the HTTP one and the headless one", len(services))
		}
		// Followers catching up are not ready; Prometheus must scrape
		// them all the same.
		for _, svc := range services {
			if !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("Service %s lists ready pods only: a lagging member would not be scraped", svc.Name)
			}
		}
		pdb := only[*policyv1.PodDisruptionBudget](t, manifests)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
			t.Errorf("budget %+v, want maxUnavailable 1 (a majority of 3 stays up; a single replica must not block drains)", pdb.Spec)
		}
		sa := only[*corev1.ServiceAccount](t, manifests)
		if sa.Name != pod.ServiceAccountName {
			t.Errorf("pods run as %q, the chart made %q", pod.ServiceAccountName, sa.Name)
		}
		if n := len(all[*networkingv1.NetworkPolicy](manifests)); n != 0 {
			t.Errorf("%d NetworkPolicies; the default is none", n)
		}
		if n := len(all[*monitoringv1.ServiceMonitor](manifests)) + len(all[*monitoringv1.PrometheusRule](manifests)); n != 0 {
			t.Error("a ServiceMonitor or PrometheusRule although the cluster does not serve monitoring.coreos.com/v1")
		}
	})

	t.Run("helm test", func(t *testing.T) {
		testPod := only[*corev1.Pod](t, manifests)
		if testPod.Annotations["helm.sh/hook"] != "test" || testPod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("test pod: annotations %v restartPolicy %q", testPod.Annotations, testPod.Spec.RestartPolicy)
		}
		publish := container(t, testPod.Spec, "publish")
		if !slices.Contains(publish.Command, "request") || !slices.Contains(publish.Command, "Voik-Ack:1") || !slices.Contains(publish.Command, "voik.helm-test") {
			t.Errorf("publish %q: want a request with the Voik-Ack header to the test subject", publish.Command)
		}
		fetch := container(t, testPod.Spec, "fetch")
		if fetch.Image != voik.Image || len(fetch.Args) < 2 || fetch.Args[0] != "fetch" || fetch.Args[1] != "voik.helm-test" {
			t.Errorf("fetch: image %q args %q; want voik's image fetching the test subject", fetch.Image, fetch.Args)
		}
		if got := envMap(fetch)["VOIK_NATS_URL"].Value; got != env["VOIK_NATS_URL"].Value {
			t.Errorf("fetch connects to %q, voik to %q", got, env["VOIK_NATS_URL"].Value)
		}
		checkPodSecurity(t, testPod.Spec.SecurityContext, true)
		for _, c := range append(testPod.Spec.InitContainers, testPod.Spec.Containers...) {
			checkContainerSecurity(t, c.SecurityContext)
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("test container %s has no memory limit", c.Name)
			}
		}
	})
}

// TestCIValues renders each ci/*-values.yaml (the files `make chart-lint`
// lints) and checks them like the defaults, plus what each one is about.
func TestCIValues(t *testing.T) {
	for _, file := range ciValuesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			manifests := render(t, []string{file}, "--api-versions", "monitoring.coreos.com/v1")
			for _, p := range validate(manifests) {
				t.Error(p)
			}
			s := only[*appsv1.StatefulSet](t, manifests)
			voik := container(t, s.Spec.Template.Spec, "voik")
			checkPodSecurity(t, s.Spec.Template.Spec.SecurityContext, true)
			checkContainerSecurity(t, voik.SecurityContext)
			checkSecretFiles(t, s.Spec.Template.Spec, voik)
			for _, p := range all[*corev1.Pod](manifests) {
				for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
					checkSecretFiles(t, p.Spec, c)
				}
			}
		})
	}
}

// TestAuthentication checks each way to reach NATS: the VOIK_* variables
// voik's container reads, and the NATS_* variables the NATS CLI of the
// helm test pod reads, from the Secret named in the values. The test pod
// is rendered for every file, also where the file turns it off.
//
// natsConnectionSettings are the VOIK_NATS_ variables set whatever the
// authentication: the rest are auth and TLS.
var natsConnectionSettings = []string{"VOIK_NATS_URL", "VOIK_NATS_NAME", "VOIK_NATS_PING_INTERVAL", "VOIK_NATS_MAX_PINGS_OUT"}

func TestAuthentication(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]string // variable: file path, or "secret:NAME/KEY"
		cli  map[string]string // the same for the test pod's publish container
	}{
		{"ci/credentials-tls-values.yaml", map[string]string{
			"VOIK_NATS_CREDS":    "/etc/voik/nats/credentials/voik.creds",
			"VOIK_NATS_TLS_CA":   "/etc/voik/nats/tls-ca/ca.crt",
			"VOIK_NATS_TLS_CERT": "/etc/voik/nats/tls-client/tls.crt",
			"VOIK_NATS_TLS_KEY":  "/etc/voik/nats/tls-client/tls.key",
		}, map[string]string{
			"NATS_CREDS": "/etc/voik/nats/credentials/voik.creds",
			"NATS_CA":    "/etc/voik/nats/tls-ca/ca.crt",
			"NATS_CERT":  "/etc/voik/nats/tls-client/tls.crt",
			"NATS_KEY":   "/etc/voik/nats/tls-client/tls.key",
		}},
		{"ci/nkey-values.yaml", map[string]string{"VOIK_NATS_NKEY": "/etc/voik/nats/nkey/nkey.seed"},
			map[string]string{"NATS_NKEY": "/etc/voik/nats/nkey/nkey.seed"}},
		// The NATS CLI takes a token as the user name.
		{"ci/token-ephemeral-values.yaml", map[string]string{"VOIK_NATS_TOKEN": "secret:nats-token/token"},
			map[string]string{"NATS_USER": "secret:nats-token/token"}},
		{"ci/userpassword-values.yaml", map[string]string{
			"VOIK_NATS_USER":     "secret:voik-nats-user/username",
			"VOIK_NATS_PASSWORD": "secret:voik-nats-user/password",
		}, map[string]string{
			"NATS_USER":     "secret:voik-nats-user/username",
			"NATS_PASSWORD": "secret:voik-nats-user/password",
		}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			manifests := render(t, []string{tc.file}, "--set", "tests.enabled=true")
			s := only[*appsv1.StatefulSet](t, manifests)
			voik := container(t, s.Spec.Template.Spec, "voik")
			checkEnv(t, "voik", envMap(voik), tc.want, "VOIK_NATS_", natsConnectionSettings...)
			testPod := only[*corev1.Pod](t, manifests)
			publish := envMap(container(t, testPod.Spec, "publish"))
			checkEnv(t, "test pod", publish, tc.cli, "NATS_", "NATS_URL")
			if got, want := publish["NATS_URL"].Value, envMap(voik)["VOIK_NATS_URL"].Value; got != want {
				t.Errorf("test pod publishes to %q, voik connects to %q", got, want)
			}
		})
	}
}

// checkEnv checks that env has each variable of want (a value, or
// "secret:NAME/KEY" for one from a Secret) and no other variable with the
// prefix, apart from those in also.
func checkEnv(t *testing.T, who string, env map[string]corev1.EnvVar, want map[string]string, prefix string, also ...string) {
	t.Helper()
	for name, w := range want {
		e, ok := env[name]
		switch {
		case !ok:
			t.Errorf("%s: %s not set", who, name)
		case strings.HasPrefix(w, "secret:"):
			ref := e.ValueFrom
			if ref == nil || ref.SecretKeyRef == nil || "secret:"+ref.SecretKeyRef.Name+"/"+ref.SecretKeyRef.Key != w {
				t.Errorf("%s: %s = %+v, want from %s", who, name, e, w)
			}
		case e.Value != w:
			t.Errorf("%s: %s = %q, want %q", who, name, e.Value, w)
		}
	}
	for name := range env {
		if _, ok := want[name]; strings.HasPrefix(name, prefix) && !ok && !slices.Contains(also, name) {
			t.Errorf("%s: %s set as well", who, name)
		}
	}
}

// TestValuesReachTheManifests checks values that the ci files change.
func TestValuesReachTheManifests(t *testing.T) {
	t.Run("no persistence", func(t *testing.T) {
		s := only[*appsv1.StatefulSet](t, render(t, []string{"ci/token-ephemeral-values.yaml"}))
		if len(s.Spec.VolumeClaimTemplates) != 0 {
			t.Error("claim templates with persistence disabled")
		}
		data := volumeOf(t, s.Spec.Template.Spec, "data")
		if data.EmptyDir == nil || data.EmptyDir.SizeLimit == nil || data.EmptyDir.SizeLimit.Cmp(resource.MustParse("2Gi")) != 0 {
			t.Errorf("data volume %+v, want an emptyDir of 2Gi", data.VolumeSource)
		}
		voik := container(t, s.Spec.Template.Spec, "voik")
		if want := "registry.example.com/mirror/voik@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; voik.Image != want {
			t.Errorf("image %q, want the digest %q", voik.Image, want)
		}
		if e := envMap(voik)["GOMEMLIMIT"]; e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
			t.Errorf("extraEnv GOMEMLIMIT %+v", e)
		}
		if s.Spec.Template.Spec.ServiceAccountName != "voik-existing" {
			t.Errorf("serviceAccountName %q", s.Spec.Template.Spec.ServiceAccountName)
		}
	})
	t.Run("claims and spreading", func(t *testing.T) {
		manifests := render(t, []string{"ci/nkey-values.yaml"})
		s := only[*appsv1.StatefulSet](t, manifests)
		claim := s.Spec.VolumeClaimTemplates[0]
		if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "fast-ssd" ||
			claim.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("100Gi")) != 0 {
			t.Errorf("claim %+v", claim.Spec)
		}
		if p := s.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenScaled != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			t.Errorf("retention policy %+v", p)
		}
		spec := s.Spec.Template.Spec
		if *s.Spec.Replicas != 5 {
			t.Errorf("replicas %d, want 5", *s.Spec.Replicas)
		}
		// The file's own constraint and affinity replace the chart's.
		if len(spec.TopologySpreadConstraints) != 1 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" ||
			spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil || len(spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
			spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchLabels["app.kubernetes.io/instance"] != "" {
			t.Errorf("spread %+v, affinity %+v: want the file's own", spec.TopologySpreadConstraints, spec.Affinity)
		}
		env := envMap(container(t, spec, "voik"))
		checkGroupEnv(t, env, "history-eu", "5")
		if env["VOIK_LEASE"].Value != "3s" || env["VOIK_JOURNAL_KEEP"].Value != "2000000" {
			t.Errorf("VOIK_LEASE %q VOIK_JOURNAL_KEEP %q, want 3s and 2000000", env["VOIK_LEASE"].Value, env["VOIK_JOURNAL_KEEP"].Value)
		}
		pdb := only[*policyv1.PodDisruptionBudget](t, manifests)
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 3 || pdb.Spec.MaxUnavailable != nil {
			t.Errorf("budget %+v, want minAvailable 3 alone (a majority of 5)", pdb.Spec)
		}
	})
	t.Run("service port", func(t *testing.T) {
		manifests := render(t, []string{"ci/userpassword-values.yaml"})
		voik := container(t, only[*appsv1.StatefulSet](t, manifests).Spec.Template.Spec, "voik")
		if voik.Ports[0].ContainerPort != 9000 || envMap(voik)["VOIK_HTTP_ADDR"].Value != ":9000" {
			t.Errorf("port %d, VOIK_HTTP_ADDR %q; want 9000 both", voik.Ports[0].ContainerPort, envMap(voik)["VOIK_HTTP_ADDR"].Value)
		}
		if voik.ReadinessProbe != nil {
			t.Error("readiness probe although disabled")
		}
	})
	t.Run("network policy", func(t *testing.T) {
		np := only[*networkingv1.NetworkPolicy](t, render(t, []string{"ci/credentials-tls-values.yaml"}))
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
			t.Errorf("policy types %v", np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 {
			t.Errorf("ingress %+v: want HTTP from the monitoring namespace", np.Spec.Ingress)
		}
		var natsPort, dns bool
		for _, rule := range np.Spec.Egress {
			for _, p := range rule.Ports {
				natsPort = natsPort || (p.Port.IntValue() == 4222 && len(rule.To) == 1)
				dns = dns || p.Port.IntValue() == 53
			}
		}
		if !natsPort || !dns {
			t.Errorf("egress %+v: want NATS (to its pods) and DNS", np.Spec.Egress)
		}
	})
}

// TestServiceMonitor: made only when the cluster serves
// monitoring.coreos.com/v1 and the values ask for it.
func TestServiceMonitor(t *testing.T) {
	manifests := render(t, nil, append(required, "--api-versions", "monitoring.coreos.com/v1")...)
	sm := only[*monitoringv1.ServiceMonitor](t, manifests)
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("endpoints %+v, want /metrics on http", sm.Spec.Endpoints)
	}
	for _, p := range validate(manifests) {
		t.Error(p)
	}
	off := render(t, nil, append(required, "--api-versions", "monitoring.coreos.com/v1", "--set", "serviceMonitor.enabled=false")...)
	if n := len(all[*monitoringv1.ServiceMonitor](off)); n != 0 {
		t.Error("a ServiceMonitor with serviceMonitor.enabled=false")
	}
	labelled := only[*monitoringv1.ServiceMonitor](t, render(t, []string{"ci/credentials-tls-values.yaml"}, "--api-versions", "monitoring.coreos.com/v1"))
	if labelled.Labels["release"] != "kube-prometheus-stack" || labelled.Spec.Endpoints[0].Interval != "15s" {
		t.Errorf("labels %v interval %q", labelled.Labels, labelled.Spec.Endpoints[0].Interval)
	}
}

// TestEnvironmentFollowsTheSettingsTable keeps the chart in step with voik's settings:
// every variable of the settings table in docs/settings.md (generated from
// config/config.go) is set by the chart, to voik's default unless the chart
// says why not, and the chart sets no variable that voik does not know.
func TestEnvironmentFollowsTheSettingsTable(t *testing.T) {
	settings := docsSettings(t)
	const fix = "; update charts/voik (values.yaml, values.schema.json, templates/_helpers.tpl) and this test"
	// Not for Kubernetes: the chart always connects to a NATS server.
	notSet := []string{"VOIK_EMBEDDED_HOST", "VOIK_EMBEDDED_PORT"}
	// From the pod itself (a fieldRef of the downward API).
	fromPod := map[string]string{
		"VOIK_INSTANCE": "metadata.name", // a member's name: unique, and stable across restarts
	}
	// Set only when the values name a Secret (TestAuthentication).
	secrets := []string{"VOIK_NATS_CREDS", "VOIK_NATS_NKEY", "VOIK_NATS_TOKEN", "VOIK_NATS_USER",
		"VOIK_NATS_PASSWORD", "VOIK_NATS_TLS_CA", "VOIK_NATS_TLS_CERT", "VOIK_NATS_TLS_KEY"}
	// Where the chart's default differs from voik's, and why.
	chartDefaults := map[string]string{
		"VOIK_NATS_URL":   "nats://nats:4222", // the NATS chart's Service; empty would start an embedded server
		"VOIK_DATA_DIR":   "/data",            // the volume
		"VOIK_LOG_FORMAT": "json",             // for log collectors
		// No default in the chart (config.subjects is required): what
		// `required` gives. voik's > is for its embedded server only.
		"VOIK_SUBJECTS": "orders.>,voik.helm-test",
		// The chart is a group by default (standalone is voik's default),
		// named after the namespace and the release.
		"VOIK_GROUP": "history-hist-voik",
	}

	env := envMap(container(t, only[*appsv1.StatefulSet](t, render(t, nil, required...)).Spec.Template.Spec, "voik"))
	for name, voikDefault := range settings {
		got, ok := env[name]
		switch {
		case slices.Contains(notSet, name) || slices.Contains(secrets, name):
			if ok {
				t.Errorf("%s is set by default", name)
			}
		case !ok:
			t.Errorf("docs/settings.md's table has %s, which the chart does not set%s", name, fix)
		case fromPod[name] != "":
			if ref := got.ValueFrom; got.Value != "" || ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != fromPod[name] {
				t.Errorf("%s = %+v, want the pod's %s", name, got, fromPod[name])
			}
		case chartDefaults[name] != "":
			if got.Value != chartDefaults[name] {
				t.Errorf("%s = %q, want the chart's %q", name, got.Value, chartDefaults[name])
			}
		case got.Value != voikDefault:
			t.Errorf("%s = %q by default, voik's default is %q%s", name, got.Value, voikDefault, fix)
		}
	}
	for _, name := range slices.Concat(notSet, secrets, mapsKeys(chartDefaults), mapsKeys(fromPod)) {
		if _, ok := settings[name]; !ok {
			t.Errorf("%s is not in the settings table of docs/settings.md any more%s", name, fix)
		}
	}
	// Every VOIK_* variable the chart can set, with any values, is voik's.
	for _, file := range ciValuesFiles(t) {
		for _, m := range render(t, []string{file}) {
			var specs []corev1.PodSpec
			switch o := m.object.(type) {
			case *appsv1.StatefulSet:
				specs = append(specs, o.Spec.Template.Spec)
			case *corev1.Pod:
				specs = append(specs, o.Spec)
			}
			for _, spec := range specs {
				for _, c := range append(spec.InitContainers, spec.Containers...) {
					for _, e := range c.Env {
						if _, ok := settings[e.Name]; strings.HasPrefix(e.Name, "VOIK_") && !ok {
							t.Errorf("%s: %s sets %s, which voik does not read%s", file, c.Name, e.Name, fix)
						}
					}
				}
			}
		}
	}
}

var settingsRow = regexp.MustCompile("^\\| `(VOIK_[A-Z0-9_]+)` \\| [^|]+ \\| (empty|`([^`]*)`)[^|]*\\|")

// docsSettings reads the settings table of docs/settings.md: variable -> default.
func docsSettings(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "settings.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	begin, end := strings.Index(text, "<!-- settings:begin -->"), strings.Index(text, "<!-- settings:end -->")
	if begin < 0 || end < begin {
		t.Fatal("docs/settings.md has no settings table between <!-- settings:begin --> and <!-- settings:end -->")
	}
	settings := map[string]string{}
	for _, line := range strings.Split(text[begin:end], "\n") {
		if m := settingsRow.FindStringSubmatch(line); m != nil {
			settings[m[1]] = m[3]
		}
	}
	if len(settings) < 5 {
		t.Fatalf("read only %d settings from docs/settings.md", len(settings))
	}
	return settings
}

func mapsKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func checkPodSecurity(t *testing.T, sc *corev1.PodSecurityContext, wantFSGroup bool) {
	t.Helper()
	switch {
	case sc == nil:
		t.Error("no pod security context")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("pod: runAsNonRoot is not true")
	case sc.RunAsUser == nil || *sc.RunAsUser == 0:
		t.Error("pod: runAsUser is not a non-root uid (the kubelet cannot check runAsNonRoot against a user name)")
	case wantFSGroup && sc.FSGroup == nil:
		t.Error("pod: no fsGroup: the volume would not be writable by the non-root user")
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("pod: seccomp profile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

func checkContainerSecurity(t *testing.T, sc *corev1.SecurityContext) {
	t.Helper()
	switch {
	case sc == nil:
		t.Error("no container security context")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container: allowPrivilegeEscalation is not false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container: readOnlyRootFilesystem is not true")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("container: privileged")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("container: capabilities %+v, want drop [ALL] and nothing added", sc.Capabilities)
	}
}

// checkSecretFiles: every variable that names a file under /etc/voik/nats
// (voik's VOIK_NATS_*, the NATS CLI's NATS_*) is a read-only mount of a
// Secret volume that projects that very file.
func checkSecretFiles(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Value, "/etc/voik/nats/") {
			continue
		}
		found := false
		for _, m := range c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, e.Value)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			v := volumeOf(t, spec, m.Name)
			if v.Secret == nil || !m.ReadOnly {
				t.Errorf("%s: %s=%s is on %s, not a read-only Secret", c.Name, e.Name, e.Value, m.Name)
				continue
			}
			for _, item := range v.Secret.Items {
				found = found || item.Path == rel
			}
		}
		if !found {
			t.Errorf("%s: %s=%s: no Secret volume projects that file", c.Name, e.Name, e.Value)
		}
	}
}

func mountOf(t *testing.T, c corev1.Container, volume string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m
		}
	}
	t.Fatalf("container %s does not mount %q", c.Name, volume)
	return corev1.VolumeMount{}
}

func volumeOf(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

// TestNotes renders NOTES.txt (helm template leaves it out, so a copy of the
// chart gets a template that includes it) and checks that it tells how to
// fetch a subject from the pod and container the chart makes.
func TestNotes(t *testing.T) {
	notes := renderNotes(t, required...)
	s := only[*appsv1.StatefulSet](t, render(t, nil, required...))
	container(t, s.Spec.Template.Spec, "voik")
	for _, want := range []string{
		"kubectl -n " + namespace + " exec " + s.Name + "-0 -c voik -- voik fetch SUBJECT --count 10",
		"kubectl -n " + namespace + " rollout status statefulset/" + s.Name,
		"helm test " + release + " -n " + namespace,
		"VOIK.API.FETCH.<subject>",
		"JetStream",
		"kubectl -n " + namespace + " exec " + s.Name + "-0 -c voik -- voik group",
		"replication group history-hist-voik",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt does not say %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "WARNING") {
		t.Errorf("NOTES.txt warns with the default values:\n%s", notes)
	}
}

// renderNotes renders NOTES.txt with flags: helm template leaves it out,
// so a copy of the chart gets a template that includes it.
func renderNotes(t *testing.T, flags ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "voik")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	const notesTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ include (print .Template.BasePath "/NOTES.txt") . | quote }}
`
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(notesTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"template", release, dir, "--namespace", namespace, "--show-only", "templates/zz-notes.yaml"}, flags...)
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return only[*corev1.ConfigMap](t, decodeAll(t, out)).Data["notes"]
}
