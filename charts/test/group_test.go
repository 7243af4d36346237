package charttest

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkGroupEnv: the pods are members of group `group`, each named after
// its pod, `replicas` of them.
func checkGroupEnv(t *testing.T, env map[string]corev1.EnvVar, group, replicas string) {
	t.Helper()
	if got := env["VOIK_GROUP"]; got.Value != group || got.ValueFrom != nil {
		t.Errorf("VOIK_GROUP %+v, want %q", got, group)
	}
	if got := env["VOIK_REPLICAS"]; got.Value != replicas || got.ValueFrom != nil {
		t.Errorf("VOIK_REPLICAS %+v, want %q (replicaCount)", got, replicas)
	}
	instance := env["VOIK_INSTANCE"]
	if ref := instance.ValueFrom; instance.Value != "" || ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("VOIK_INSTANCE %+v, want the pod's name (fieldRef metadata.name)", instance)
	}
}

// checkSpread: the pod template's anti-affinity on the node and spread
// over zones, as spread.antiAffinity and spread.zones say (soft, hard or
// none), both selecting the release's pods.
func checkSpread(t *testing.T, s *appsv1.StatefulSet, antiAffinity, zones string) {
	t.Helper()
	spec := s.Spec.Template.Spec
	podLabels := labels.Set(s.Spec.Template.Labels)
	var anti *corev1.PodAntiAffinity
	if spec.Affinity != nil {
		anti = spec.Affinity.PodAntiAffinity
	}
	var term *corev1.PodAffinityTerm
	switch {
	case antiAffinity == "none":
		if anti != nil {
			t.Errorf("podAntiAffinity %+v with spread.antiAffinity none", anti)
		}
	case anti == nil:
		t.Fatalf("no podAntiAffinity, want %s", antiAffinity)
	case antiAffinity == "soft":
		if len(anti.PreferredDuringSchedulingIgnoredDuringExecution) != 1 || len(anti.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
			t.Fatalf("podAntiAffinity %+v, want one preferred term", anti)
		}
		term = &anti.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	case antiAffinity == "hard":
		if len(anti.RequiredDuringSchedulingIgnoredDuringExecution) != 1 || len(anti.PreferredDuringSchedulingIgnoredDuringExecution) != 0 {
			t.Fatalf("podAntiAffinity %+v, want one required term", anti)
		}
		term = &anti.RequiredDuringSchedulingIgnoredDuringExecution[0]
	}
	if term != nil {
		if term.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("anti-affinity on %q, want kubernetes.io/hostname", term.TopologyKey)
		}
		checkSelectsRelease(t, "anti-affinity", term.LabelSelector.MatchLabels, podLabels)
	}
	constraints := spec.TopologySpreadConstraints
	if zones == "none" {
		if len(constraints) != 0 {
			t.Errorf("topology spread %+v with spread.zones none", constraints)
		}
		return
	}
	if len(constraints) != 1 {
		t.Fatalf("topology spread %+v, want one constraint over zones", constraints)
	}
	c := constraints[0]
	want := corev1.ScheduleAnyway
	if zones == "hard" {
		want = corev1.DoNotSchedule
	}
	if c.TopologyKey != "topology.kubernetes.io/zone" || c.MaxSkew != 1 || c.WhenUnsatisfiable != want {
		t.Errorf("topology spread %+v, want maxSkew 1 over topology.kubernetes.io/zone, %s", c, want)
	}
	checkSelectsRelease(t, "topology spread", c.LabelSelector.MatchLabels, podLabels)
}

// checkSelectsRelease: a selector of the release's own pods (its instance
// label), not every voik of the cluster.
func checkSelectsRelease(t *testing.T, what string, selector map[string]string, podLabels labels.Set) {
	t.Helper()
	if !labels.SelectorFromSet(selector).Matches(podLabels) || selector["app.kubernetes.io/instance"] != release {
		t.Errorf("%s selects %v; want the release's pods %v", what, selector, podLabels)
	}
}

// TestGroupValues: the group's name (the namespace and the release's full
// name, dots made _; or group.name), and standalone, which sets none of the
// group's variables.
func TestGroupValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release string
		flags   []string
		group   string
	}{
		{"default", release, nil, "history-hist-voik"},
		{"dotted release", "hist.eu", nil, "history-hist_eu-voik"},
		{"release containing the chart's name", "voik-prod", nil, "history-voik-prod"},
		{"group.name", release, []string{"--set", "group.name=orders_EU-1"}, "orders_EU-1"},
		{"group of one", release, []string{"--set", "replicaCount=1"}, "history-hist-voik"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", tc.release, chartDir, "--namespace", namespace}, required...)
			out, err := runHelm(t, append(args, tc.flags...)...)
			if err != nil {
				t.Fatal(err)
			}
			s := only[*appsv1.StatefulSet](t, decodeAll(t, out))
			env := envMap(container(t, s.Spec.Template.Spec, "voik"))
			checkGroupEnv(t, env, tc.group, env["VOIK_REPLICAS"].Value)
			if got := env["VOIK_REPLICAS"].Value; got != strconv.Itoa(int(*s.Spec.Replicas)) {
				t.Errorf("VOIK_REPLICAS %q, replicas %d", got, *s.Spec.Replicas)
			}
		})
	}

	t.Run("standalone", func(t *testing.T) {
		manifests := render(t, []string{"ci/token-ephemeral-values.yaml"})
		s := only[*appsv1.StatefulSet](t, manifests)
		for name := range envMap(container(t, s.Spec.Template.Spec, "voik")) {
			switch name {
			case "VOIK_GROUP", "VOIK_INSTANCE", "VOIK_REPLICAS", "VOIK_LEASE", "VOIK_JOURNAL_KEEP":
				t.Errorf("%s set with group.enabled false", name)
			}
		}
		if *s.Spec.Replicas != 1 {
			t.Errorf("standalone with %d replicas", *s.Spec.Replicas)
		}
		notes := renderNotes(t, "--values", abs(t, "ci/token-ephemeral-values.yaml"))
		if !strings.Contains(notes, "runs standalone") || strings.Contains(notes, "voik group") || strings.Contains(notes, "JetStream") {
			t.Errorf("standalone NOTES:\n%s", notes)
		}
	})

	// Standalone copies would each capture everything and all answer the
	// same requests: the schema allows standalone with one replica only.
	t.Run("standalone needs one replica", func(t *testing.T) {
		_, err := renderRaw(t, nil, append(required, "--set", "group.enabled=false", "--set", "replicaCount=3")...)
		if err == nil || !strings.Contains(err.Error(), "replicaCount") {
			t.Fatalf("standalone with 3 replicas rendered: %v", err)
		}
	})
}

// TestSpreadValues: spread.antiAffinity and spread.zones, and values that
// replace what they make.
func TestSpreadValues(t *testing.T) {
	for _, tc := range []struct{ anti, zones string }{
		{"soft", "soft"}, {"hard", "hard"}, {"none", "none"}, {"hard", "none"}, {"none", "soft"},
	} {
		t.Run(tc.anti+"-"+tc.zones, func(t *testing.T) {
			s := only[*appsv1.StatefulSet](t, render(t, nil, append(required, "--set", "spread.antiAffinity="+tc.anti, "--set", "spread.zones="+tc.zones)...))
			checkSpread(t, s, tc.anti, tc.zones)
		})
	}
	t.Run("node affinity kept beside the anti-affinity", func(t *testing.T) {
		s := only[*appsv1.StatefulSet](t, render(t, nil, append(required,
			"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=disk",
			"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")...))
		checkSpread(t, s, "soft", "soft")
		if a := s.Spec.Template.Spec.Affinity; a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
			t.Errorf("affinity %+v: the node affinity of the values is lost", a)
		}
	})
}

// TestDisruptionBudgetKeepsAMajority: the chart refuses a budget that lets
// a drain take down a majority of the group (nothing would commit, nobody
// could be elected), percentages rounded up as Kubernetes does; a group of
// one and a standalone pod must be allowed to move.
func TestDisruptionBudgetKeepsAMajority(t *testing.T) {
	for _, tc := range []struct {
		replicas string
		budget   []string
		ok       bool
	}{
		{"3", []string{"podDisruptionBudget.maxUnavailable=1"}, true},
		{"3", []string{"podDisruptionBudget.maxUnavailable=2"}, false},
		{"3", []string{"podDisruptionBudget.maxUnavailable=34%"}, false}, // 1.02 rounds up to 2
		{"3", []string{"podDisruptionBudget.maxUnavailable=33%"}, true},
		{"3", []string{"podDisruptionBudget.maxUnavailable=", "podDisruptionBudget.minAvailable=2"}, true},
		{"3", []string{"podDisruptionBudget.maxUnavailable=", "podDisruptionBudget.minAvailable=1"}, false},
		{"3", []string{"podDisruptionBudget.maxUnavailable=", "podDisruptionBudget.minAvailable=50%"}, true}, // 1.5 rounds up to 2
		{"5", []string{"podDisruptionBudget.maxUnavailable=2"}, true},
		{"5", []string{"podDisruptionBudget.maxUnavailable=3"}, false},
		{"7", []string{"podDisruptionBudget.maxUnavailable=", "podDisruptionBudget.minAvailable=3"}, false},
		{"1", []string{"podDisruptionBudget.maxUnavailable=1"}, true},
		{"3", []string{"podDisruptionBudget.enabled=false", "podDisruptionBudget.maxUnavailable=3"}, true},
	} {
		name := tc.replicas + ":" + strings.Join(tc.budget, ",")
		t.Run(name, func(t *testing.T) {
			flags := append(append([]string{}, required...), "--set", "replicaCount="+tc.replicas)
			for _, b := range tc.budget {
				// --set-string keeps "" and "34%" strings, --set makes numbers.
				if strings.HasSuffix(b, "%") || strings.HasSuffix(b, "=") {
					flags = append(flags, "--set-string", b)
				} else {
					flags = append(flags, "--set", b)
				}
			}
			_, err := renderRaw(t, nil, flags...)
			switch {
			case tc.ok && err != nil:
				t.Errorf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Error("rendered a budget that lets a drain take a majority down")
			case !tc.ok && !strings.Contains(err.Error(), "a majority"):
				t.Errorf("refused, but not saying why: %v", err)
			}
		})
	}
}

// abs is a values file of the chart as an absolute path (for renderNotes,
// whose chart is a copy elsewhere).
func abs(t *testing.T, file string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(chartDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
