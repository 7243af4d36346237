package charttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// kubeObject is one rendered object as the API server takes it.
type kubeObject struct {
	source string
	obj    map[string]any
}

func (o kubeObject) kind() string { s, _ := o.obj["kind"].(string); return s }

func (o kubeObject) name() string {
	meta, _ := o.obj["metadata"].(map[string]any)
	s, _ := meta["name"].(string)
	return s
}

// renderObjects renders the chart into namespace ns, decoding each manifest
// strictly first (as the other tests do), and returns them as JSON objects
// in the order helm installs them: its kinds' order, hooks (the test pod) last.
func renderObjects(t *testing.T, ns string, valuesFiles []string, flags ...string) []kubeObject {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", ns, "--api-versions", "monitoring.coreos.com/v1"}
	for _, f := range valuesFiles {
		args = append(args, "--values", filepath.Join(chartDir, f))
	}
	out, err := runHelm(t, append(args, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(t, out) // strict decoding, before the server sees them
	var objects []kubeObject
	for _, doc := range strings.Split(out, "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if len(obj) == 0 {
			continue
		}
		source := ""
		if m := sourceLine.FindStringSubmatch(doc); m != nil {
			source = m[1]
		}
		objects = append(objects, kubeObject{source: source, obj: obj})
	}
	slices.SortStableFunc(objects, func(a, b kubeObject) int { return installRank(a) - installRank(b) })
	return objects
}

// installRank is the object's place in helm's install order (the kinds the
// chart makes), unknown kinds after them, hooks last.
func installRank(o kubeObject) int {
	meta, _ := o.obj["metadata"].(map[string]any)
	if ann, _ := meta["annotations"].(map[string]any); ann["helm.sh/hook"] != nil {
		return 100
	}
	order := []string{"Namespace", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap",
		"PersistentVolumeClaim", "CustomResourceDefinition", "Service", "Pod", "StatefulSet"}
	if i := slices.Index(order, o.kind()); i >= 0 {
		return i
	}
	return len(order)
}

// newNamespace creates a namespace whose pods must meet Pod Security's
// restricted profile (enforced for pods, warned about for the pod templates
// of workloads), unless podSecurity is "".
func newNamespace(t *testing.T, k *kubeAPI, name, podSecurity string) {
	t.Helper()
	labels := map[string]any{}
	if podSecurity != "" {
		for _, mode := range []string{"enforce", "warn", "audit"} {
			labels["pod-security.kubernetes.io/"+mode] = podSecurity
		}
	}
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name, "labels": labels}}
	if _, _, err := k.create(context.Background(), ns, false); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
}

// createAll creates every object, first as a server-side dry run and then
// for real; both must succeed without a warning. What the pods refer to and
// an operator makes beforehand (an existing ServiceAccount, a
// PriorityClass) is made first, as the operator would have.
func createAll(t *testing.T, k *kubeAPI, ns string, objects []kubeObject) {
	t.Helper()
	ctx := context.Background()
	for _, pre := range prerequisites(t, objects) {
		if _, _, err := k.create(ctx, pre, false); err != nil && !isAlreadyExists(err) {
			t.Fatalf("prerequisite %v: %v", pre["metadata"], err)
		}
	}
	for _, o := range objects {
		what := fmt.Sprintf("%s %s (%s)", o.kind(), o.name(), o.source)
		for _, dryRun := range []bool{true, false} {
			made, warnings, err := k.create(ctx, o.obj, dryRun)
			if err != nil {
				t.Errorf("%s, dry run %v: %v", what, dryRun, err)
				break
			}
			for _, w := range warnings {
				t.Errorf("%s, dry run %v: warning %s", what, dryRun, w)
			}
			if meta, _ := made["metadata"].(map[string]any); meta["namespace"] != ns || meta["name"] != o.name() {
				t.Errorf("%s, dry run %v: made %v/%v", what, dryRun, meta["namespace"], meta["name"])
			}
		}
	}
}

// prerequisites are the ServiceAccounts and PriorityClasses the objects'
// pods name and the objects do not make.
func prerequisites(t *testing.T, objects []kubeObject) []map[string]any {
	t.Helper()
	made := map[string]bool{}
	for _, o := range objects {
		made[o.kind()+"/"+o.name()] = true
	}
	var pre []map[string]any
	for _, o := range objects {
		var spec map[string]any
		switch o.kind() {
		case "Pod":
			spec, _ = o.obj["spec"].(map[string]any)
		case "StatefulSet":
			s, _ := o.obj["spec"].(map[string]any)
			tmpl, _ := s["template"].(map[string]any)
			spec, _ = tmpl["spec"].(map[string]any)
		default:
			continue
		}
		meta, _ := o.obj["metadata"].(map[string]any)
		if sa, _ := spec["serviceAccountName"].(string); sa != "" && !made["ServiceAccount/"+sa] {
			made["ServiceAccount/"+sa] = true
			pre = append(pre, map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
				"metadata": map[string]any{"name": sa, "namespace": meta["namespace"]}})
		}
		if pc, _ := spec["priorityClassName"].(string); pc != "" && !made["PriorityClass/"+pc] {
			made["PriorityClass/"+pc] = true
			pre = append(pre, map[string]any{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
				"metadata": map[string]any{"name": pc}, "value": 1000})
		}
	}
	return pre
}

func isAlreadyExists(err error) bool {
	var e *apiError
	return errors.As(err, &e) && e.Code == http.StatusConflict
}

// TestAPIServerCreatesTheChart creates what the chart renders, with the
// default values (and the one required) and with each ci/*-values.yaml,
// through the real API server: a server-side dry run, then for real, in a
// namespace of its own that enforces Pod Security's restricted profile.
// ServiceMonitor and PrometheusRule are rendered (as with the Prometheus
// Operator's API served) and created through their CRDs.
func TestAPIServerCreatesTheChart(t *testing.T) {
	k := kube(t)
	cases := []struct {
		name  string
		files []string
		flags []string
	}{
		{"defaults", nil, required},
		// helm test's pod, created too (it is a hook).
		{"defaults-test-pod", nil, append(slices.Clone(required), "--set", "tests.enabled=true")},
	}
	for _, f := range ciValuesFiles(t) {
		cases = append(cases, struct {
			name  string
			files []string
			flags []string
		}{strings.TrimSuffix(filepath.Base(f), "-values.yaml"), []string{f}, []string{"--set", "tests.enabled=true"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := "chart-" + tc.name
			objects := renderObjects(t, ns, tc.files, tc.flags...)
			kinds := map[string]int{}
			for _, o := range objects {
				kinds[o.kind()]++
			}
			if kinds["StatefulSet"] != 1 || kinds["Service"] != 2 {
				t.Fatalf("rendered %v", kinds)
			}
			newNamespace(t, k, ns, "restricted")
			createAll(t, k, ns, objects)
			// The StatefulSet as stored: the server's defaults applied, the
			// group's environment as the chart set it.
			got, err := k.get(context.Background(), "apps/v1", "StatefulSet", ns, release+"-voik")
			if err != nil {
				t.Fatal(err)
			}
			data, _ := json.Marshal(got)
			var s appsv1.StatefulSet
			if err := json.Unmarshal(data, &s); err != nil {
				t.Fatal(err)
			}
			if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement || s.Spec.Replicas == nil || *s.Spec.Replicas < 1 {
				t.Errorf("stored StatefulSet: policy %q replicas %v", s.Spec.PodManagementPolicy, s.Spec.Replicas)
			}
		})
	}
}

// TestAPIServerValidates shows that the server refuses what strict decoding
// into the Go types lets through: both objects below decode strictly, and
// the server answers 422 Invalid, naming the field.
func TestAPIServerValidates(t *testing.T) {
	k := kube(t)
	ns := "chart-invalid"
	newNamespace(t, k, ns, "restricted")
	objects := renderObjects(t, ns, nil, required...)
	find := func(kind string) map[string]any {
		for _, o := range objects {
			if o.kind() == kind {
				var copied map[string]any
				data, _ := json.Marshal(o.obj)
				json.Unmarshal(data, &copied)
				return copied
			}
		}
		t.Fatalf("no %s rendered", kind)
		return nil
	}
	mutated := func(kind string, change func(obj map[string]any)) map[string]any {
		obj := find(kind)
		change(obj)
		data, _ := json.Marshal(obj)
		if _, _, err := decoder.Decode(data, nil, nil); err != nil {
			t.Fatalf("the mutated %s does not even decode: %v", kind, err)
		}
		return obj
	}
	podLabels := func(obj map[string]any) map[string]any {
		return obj["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
	}
	for _, tc := range []struct {
		name  string
		obj   map[string]any
		field string // in the server's message
	}{
		{"selector that misses the pod template", mutated("StatefulSet", func(obj map[string]any) {
			podLabels(obj)["app.kubernetes.io/name"] = "not-voik"
		}), "spec.template.metadata.labels"},
		{"label value over 63 characters", mutated("Service", func(obj map[string]any) {
			obj["metadata"].(map[string]any)["labels"].(map[string]any)["voik/service"] = strings.Repeat("x", 64)
		}), "metadata.labels"},
		{"claim template without storage", mutated("StatefulSet", func(obj map[string]any) {
			claim := obj["spec"].(map[string]any)["volumeClaimTemplates"].([]any)[0].(map[string]any)
			delete(claim["spec"].(map[string]any), "resources")
		}), "resources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := k.create(context.Background(), tc.obj, true)
			var e *apiError
			if !errors.As(err, &e) || e.Code != http.StatusUnprocessableEntity {
				t.Fatalf("want 422 Invalid, got %v", err)
			}
			if !strings.Contains(e.Status.Message, tc.field) {
				t.Errorf("the refusal does not name %s: %s", tc.field, e.Status.Message)
			}
		})
	}
	// And the defaults themselves pass in the same namespace.
	createAll(t, k, ns, objects)
}

// TestHelmInstallAgainstTheAPIServer installs the chart with helm itself:
// helm discovers monitoring.coreos.com/v1 from the server (no
// --api-versions), so the ServiceMonitor and PrometheusRule are made by the
// chart's Capabilities checks as in a cluster with the Prometheus Operator.
func TestHelmInstallAgainstTheAPIServer(t *testing.T) {
	k := kube(t)
	ns := "chart-helm-install"
	newNamespace(t, k, ns, "restricted")
	kubeconfig := k.kubeconfig(t)
	args := append([]string{"install", release, chartDir, "--namespace", ns, "--kubeconfig", kubeconfig, "--timeout", "60s"}, required...)
	if _, err := runHelm(t, args...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range []struct{ apiVersion, kind, name string }{
		{"apps/v1", "StatefulSet", release + "-voik"},
		{"v1", "Service", release + "-voik"},
		{"v1", "Service", release + "-voik-headless"},
		{"policy/v1", "PodDisruptionBudget", release + "-voik"},
		{"monitoring.coreos.com/v1", "ServiceMonitor", release + "-voik"},
		{"monitoring.coreos.com/v1", "PrometheusRule", release + "-voik"},
	} {
		if _, err := k.get(ctx, o.apiVersion, o.kind, ns, o.name); err != nil {
			t.Errorf("after helm install: %v", err)
		}
	}
	notes, err := runHelm(t, "status", release, "--namespace", ns, "--kubeconfig", kubeconfig, "--show-desc")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(notes, "No ServiceMonitor") {
		t.Errorf("helm did not see monitoring.coreos.com/v1 on the server:\n%s", notes)
	}
}

// TestAPIServerCreatesTheSidecar creates the NATS chart's StatefulSet with
// the sidecar example's patches applied, as the NATS chart would make it.
func TestAPIServerCreatesTheSidecar(t *testing.T) {
	k := kube(t)
	ns := "chart-sidecar"
	s := patchedNATSStatefulSet(t)
	s.Namespace = ns
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	obj["apiVersion"], obj["kind"] = "apps/v1", "StatefulSet"
	// NATS's own containers run as their images say (root in nats:alpine):
	// no Pod Security profile is asked of this namespace.
	newNamespace(t, k, ns, "")
	createAll(t, k, ns, []kubeObject{{source: sidecarExample, obj: obj}})
}
