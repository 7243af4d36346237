package charttest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"
)

const (
	release   = "hist"
	namespace = "history"
)

var (
	repoRoot = filepath.Join("..", "..")
	chartDir = filepath.Join("..", "voik")
)

// helmBinary is the pinned helm: $HELM, else .bin/helm of the repository.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := filepath.Abs(filepath.Join(repoRoot, ".bin", "helm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("no helm at %s: run `make tools` first (or set HELM)", h)
	}
	return h
}

// runHelm runs helm and returns its standard output; err carries its
// standard error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBinary(t), args...)
	// No user configuration, no repositories, no cache: the same result on
	// every machine.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// manifest is one rendered object: the template it came from, and the object
// decoded strictly into its Kubernetes type.
type manifest struct {
	source string
	object runtime.Object
}

var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	// Strict: an unknown field or a duplicate one is an error, as it is for
	// `kubectl apply --validate=strict`.
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}()

var sourceLine = regexp.MustCompile(`(?m)^# Source: (\S+)`)

// render runs `helm template` with the given values files (relative to the
// chart directory) and extra flags, and decodes every manifest strictly.
func render(t *testing.T, valuesFiles []string, flags ...string) []manifest {
	t.Helper()
	out, err := renderRaw(t, valuesFiles, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, out)
}

func renderRaw(t *testing.T, valuesFiles []string, flags ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", filepath.Join(chartDir, f))
	}
	return runHelm(t, append(args, flags...)...)
}

func decodeAll(t *testing.T, out string) []manifest {
	t.Helper()
	var manifests []manifest
	for _, doc := range strings.Split(out, "\n---\n") {
		source := ""
		if m := sourceLine.FindStringSubmatch(doc); m != nil {
			source = m[1]
		}
		var probe map[string]any
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", source, err, doc)
		}
		if len(probe) == 0 {
			continue // only comments
		}
		object, _, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", source, err, doc)
		}
		manifests = append(manifests, manifest{source: source, object: object})
	}
	if len(manifests) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return manifests
}

// only returns the one object of type T; it fails unless there is exactly one.
func only[T runtime.Object](t *testing.T, manifests []manifest) T {
	t.Helper()
	all := all[T](manifests)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want one %T, got %d", zero, len(all))
	}
	return all[0]
}

func all[T runtime.Object](manifests []manifest) []T {
	var found []T
	for _, m := range manifests {
		if o, ok := m.object.(T); ok {
			found = append(found, o)
		}
	}
	return found
}

// chartMeta is what the tests need of Chart.yaml.
type chartMeta struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func readChart(t *testing.T) chartMeta {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c chartMeta
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// ciValuesFiles are the chart's ci/*-values.yaml, relative to the chart.
func ciValuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s (%v)", chartDir, err)
	}
	for i, f := range files {
		files[i], _ = filepath.Rel(chartDir, f)
	}
	return files
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func envMap(c corev1.Container) map[string]corev1.EnvVar {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	return env
}

// checkProbes checks voik's startup, liveness and readiness probes: HTTP
// on the named port, /healthz or /readyz, with timings set.
func checkProbes(t *testing.T, voik corev1.Container, port string) {
	t.Helper()
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", voik.StartupProbe, "/healthz"},
		{"liveness", voik.LivenessProbe, "/healthz"},
		{"readiness", voik.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != port {
			t.Errorf("%s probe on %s port %s, want %s on %s", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, port)
		}
		if p.probe.PeriodSeconds < 1 || p.probe.TimeoutSeconds < 1 || p.probe.FailureThreshold < 1 {
			t.Errorf("%s probe timings %+v", p.name, p.probe.ProbeHandler)
		}
	}
}
