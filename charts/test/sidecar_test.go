package charttest

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// sidecarValues is what examples/nats-sidecar-values.yaml may hold: the NATS
// chart's podTemplate and statefulSet knobs, nothing else (a strict decode
// refuses any other key, so a misspelt knob that the NATS chart would ignore
// fails here).
type sidecarValues struct {
	PodTemplate struct {
		Merge map[string]any   `json:"merge"`
		Patch []map[string]any `json:"patch"`
	} `json:"podTemplate"`
	StatefulSet struct {
		Merge map[string]any   `json:"merge"`
		Patch []map[string]any `json:"patch"`
	} `json:"statefulSet"`
}

const sidecarExample = "examples/nats-sidecar-values.yaml"

func readSidecarValues(t *testing.T) sidecarValues {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, sidecarExample))
	if err != nil {
		t.Fatal(err)
	}
	var v sidecarValues
	if err := yaml.UnmarshalStrict(data, &v); err != nil {
		t.Fatalf("%s: %v", sidecarExample, err)
	}
	return v
}

// applyNATSChart does what the NATS chart's loadMergePatch does with these
// values: the pod template is merged (maps key by key, lists replaced) and
// patched, then the whole StatefulSet is merged and patched (RFC 6902).
func applyNATSChart(t *testing.T, statefulSetYAML []byte, v sidecarValues) (*appsv1.StatefulSet, error) {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(statefulSetYAML, &doc); err != nil {
		t.Fatal(err)
	}
	spec := doc["spec"].(map[string]any)
	template, err := mergePatch(spec["template"].(map[string]any), v.PodTemplate.Merge, v.PodTemplate.Patch)
	if err != nil {
		return nil, err
	}
	spec["template"] = template
	patched, err := mergePatch(doc, v.StatefulSet.Merge, v.StatefulSet.Patch)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(patched)
	if err != nil {
		t.Fatal(err)
	}
	object, _, err := decoder.Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("the patched StatefulSet does not decode strictly: %v\n%s", err, data)
	}
	return object.(*appsv1.StatefulSet), nil
}

func mergePatch(doc, merge map[string]any, patch []map[string]any) (map[string]any, error) {
	mergeInto(doc, merge)
	if len(patch) == 0 {
		return doc, nil
	}
	ops, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	out, err := p.Apply(in)
	if err != nil {
		return nil, err
	}
	var result map[string]any
	return result, json.Unmarshal(out, &result)
}

// TestSidecarValues applies the example to a StatefulSet shaped like the NATS
// chart's and checks the pod that results: NATS is still there, and the voik
// container and its volume are complete and valid.
func TestSidecarValues(t *testing.T) {
	v := readSidecarValues(t)
	if spec, ok := v.PodTemplate.Merge["spec"].(map[string]any); ok {
		if _, ok := spec["containers"]; ok {
			t.Fatal("podTemplate.merge has spec.containers: a merge replaces the whole list and drops NATS")
		}
	}
	base, err := os.ReadFile(filepath.Join("testdata", "nats-chart-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := applyNATSChart(t, base, v)
	if err != nil {
		t.Fatalf("the NATS chart would fail on these patches: %v", err)
	}
	pod := s.Spec.Template.Spec
	headless := map[string]*corev1.Service{"nats-headless": {Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}}
	for _, p := range checkStatefulSet(sidecarExample, s, headless) {
		t.Error(p)
	}

	names := []string{}
	for _, c := range pod.Containers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"nats", "reloader", "voik"}) {
		t.Fatalf("containers %v, want nats and reloader untouched and voik after them", names)
	}
	voik := container(t, pod, "voik")
	env := envMap(voik)
	settings := readmeSettings(t)

	t.Run("image", func(t *testing.T) {
		if want := "ghcr.io/voik/voik:" + readChart(t).AppVersion; voik.Image != want {
			t.Errorf("image %q, want %q: keep it in step with the chart's appVersion", voik.Image, want)
		}
		if !slices.Equal(voik.Args, []string{"serve"}) {
			t.Errorf("args %q", voik.Args)
		}
	})

	t.Run("env", func(t *testing.T) {
		for _, e := range voik.Env {
			if _, ok := settings[e.Name]; !ok {
				t.Errorf("%s is not a setting of voik (README's table)", e.Name)
			}
		}
		u, err := url.Parse(env["VOIK_NATS_URL"].Value)
		if err != nil || u.Scheme != "nats" || u.Hostname() != "127.0.0.1" || u.Port() != "4222" {
			t.Errorf("VOIK_NATS_URL %q: want the pod's own NATS, nats://127.0.0.1:4222 (empty would start a second server on 4222)", env["VOIK_NATS_URL"].Value)
		}
		for _, name := range []string{"VOIK_SUBJECTS", "VOIK_API_PREFIX", "VOIK_DATA_DIR", "VOIK_HTTP_ADDR"} {
			if env[name].Value == "" {
				t.Errorf("%s not set", name)
			}
		}
	})

	t.Run("volume", func(t *testing.T) {
		var claim *corev1.PersistentVolumeClaim
		for i := range s.Spec.VolumeClaimTemplates {
			if s.Spec.VolumeClaimTemplates[i].Name == "voik-data" {
				claim = &s.Spec.VolumeClaimTemplates[i]
			}
		}
		if claim == nil {
			t.Fatal("no voik-data claim template")
		}
		if claim.Spec.Resources.Requests.Storage().Sign() <= 0 || len(claim.Spec.AccessModes) == 0 {
			t.Errorf("claim %+v", claim.Spec)
		}
		mount := mountOf(t, voik, "voik-data")
		if mount.ReadOnly || env["VOIK_DATA_DIR"].Value != mount.MountPath {
			t.Errorf("VOIK_DATA_DIR %q, claim mounted at %q read-only %v", env["VOIK_DATA_DIR"].Value, mount.MountPath, mount.ReadOnly)
		}
		if sc := pod.SecurityContext; sc == nil || sc.FSGroup == nil || voik.SecurityContext.RunAsGroup == nil || *sc.FSGroup != *voik.SecurityContext.RunAsGroup {
			t.Error("the pod's fsGroup must be voik's group, or voik cannot write its volume")
		}
	})

	t.Run("ports and probes", func(t *testing.T) {
		_, port, err := net.SplitHostPort(env["VOIK_HTTP_ADDR"].Value)
		if err != nil {
			t.Fatalf("VOIK_HTTP_ADDR %q: %v", env["VOIK_HTTP_ADDR"].Value, err)
		}
		if len(voik.Ports) != 1 || strconv.Itoa(int(voik.Ports[0].ContainerPort)) != port {
			t.Fatalf("ports %+v, VOIK_HTTP_ADDR %q: want the one port voik listens on", voik.Ports, env["VOIK_HTTP_ADDR"].Value)
		}
		// Ports share the pod's network: no number or name twice.
		seen := map[string]string{}
		for _, c := range pod.Containers {
			for _, p := range c.Ports {
				for _, key := range []string{p.Name, strconv.Itoa(int(p.ContainerPort))} {
					if other, dup := seen[key]; dup {
						t.Errorf("port %s of %s is also %s's", key, c.Name, other)
					}
					seen[key] = c.Name
				}
			}
		}
		checkProbes(t, voik, voik.Ports[0].Name)
	})

	t.Run("security context", func(t *testing.T) {
		sc := voik.SecurityContext
		checkContainerSecurity(t, sc)
		// Not set for the pod (NATS runs as its image says), so all of it on voik.
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Error("voik container: runAsNonRoot with a non-root runAsUser")
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Error("voik container: seccomp profile RuntimeDefault")
		}
		if ps := pod.SecurityContext; ps != nil && ps.RunAsNonRoot != nil {
			t.Error("the example sets runAsNonRoot for the whole pod: that would apply to NATS too")
		}
	})

	t.Run("resources", func(t *testing.T) {
		if voik.Resources.Requests.Memory().IsZero() || voik.Resources.Requests.Cpu().IsZero() {
			t.Error("no cpu or memory request")
		}
		if voik.Resources.Limits.Memory().Cmp(resource.MustParse("512Mi")) <= 0 {
			t.Error("memory limit not above voik's default VOIK_PENDING_BYTES (512MiB)")
		}
	})
}

// TestSidecarWithJetStream: with JetStream file storage the NATS chart renders
// a claim template already. The example's op replaces the list (the warning in
// its comment), and the `/-` form it gives adds to it.
func TestSidecarWithJetStream(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("testdata", "nats-chart-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	jetStream := append(base, []byte(`
    - metadata:
        name: nats-js
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: 10Gi
`)...)
	claims := func(s *appsv1.StatefulSet) []string {
		var names []string
		for _, c := range s.Spec.VolumeClaimTemplates {
			names = append(names, c.Name)
		}
		return names
	}

	v := readSidecarValues(t)
	s, err := applyNATSChart(t, jetStream, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := claims(s); !slices.Equal(got, []string{"voik-data"}) {
		t.Errorf("as given, with JetStream: claims %v; the comment says it replaces the list", got)
	}

	op := v.StatefulSet.Patch[0]
	if op["path"] != "/spec/volumeClaimTemplates" {
		t.Fatalf("the example's statefulSet.patch is %v; update this test", op)
	}
	op["path"] = "/spec/volumeClaimTemplates/-"
	op["value"] = op["value"].([]any)[0]
	s, err = applyNATSChart(t, jetStream, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := claims(s); !slices.Equal(got, []string{"nats-js", "voik-data"}) {
		t.Errorf("with /-: claims %v, want nats-js and voik-data", got)
	}
	// And the `/-` form fails without JetStream, as the NATS chart's does.
	if _, err := applyNATSChart(t, base, v); err == nil {
		t.Error("/- on an absent list should fail")
	}
}
