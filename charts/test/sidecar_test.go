package charttest

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// sidecarValues is what examples/nats-sidecar-values.yaml may hold: the NATS
// chart's knobs it uses, nothing else (a strict decode refuses any other
// key, so a misspelt knob that the NATS chart would ignore fails here).
type sidecarValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled *bool `json:"enabled"` // the NATS chart's default: true
				PVC     struct {
					Enabled *bool  `json:"enabled"` // default true
					Size    string `json:"size"`
				} `json:"pvc"`
			} `json:"fileStore"`
		} `json:"jetstream"`
		// Merged into nats.conf; "<< x >>" strings are written unquoted.
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	Container struct {
		// The NATS container's env: name -> value, or a map with valueFrom.
		Env map[string]any `json:"env"`
	} `json:"container"`
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

// patchedNATSStatefulSet is the stand-in of the NATS chart's StatefulSet
// with the example's patches applied, as the NATS chart would render it.
func patchedNATSStatefulSet(t *testing.T) *appsv1.StatefulSet {
	t.Helper()
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
	return s
}

// TestSidecarValues applies the example to a StatefulSet shaped like the NATS
// chart's and checks the pod that results: NATS is still there, and the voik
// container and its volume are complete and valid, and make the three pods'
// voiks one group.
func TestSidecarValues(t *testing.T) {
	v := readSidecarValues(t)
	s := patchedNATSStatefulSet(t)
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
	settings := docsSettings(t)

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
				t.Errorf("%s is not a setting of voik (docs/settings.md)", e.Name)
			}
		}
		u, err := url.Parse(env["VOIK_NATS_URL"].Value)
		if err != nil || u.Scheme != "nats" || u.Hostname() != "127.0.0.1" || u.Port() != "4222" {
			t.Errorf("VOIK_NATS_URL %q: want the pod's own NATS, nats://127.0.0.1:4222 (empty would start a second server on 4222)", env["VOIK_NATS_URL"].Value)
		}
		for _, name := range []string{"VOIK_SUBJECTS", "VOIK_API_PREFIX", "VOIK_DATA_DIR", "VOIK_HTTP_ADDR", "VOIK_NATS_USER"} {
			if env[name].Value == "" {
				t.Errorf("%s not set", name)
			}
		}
	})

	// Named subjects, not ">": on the cluster's NATS that would take every
	// message, requests and replies included. Every filter has a literal
	// token.
	t.Run("subjects", func(t *testing.T) {
		filters := strings.Split(env["VOIK_SUBJECTS"].Value, ",")
		for _, f := range filters {
			f = strings.TrimSpace(f)
			literal := false
			for _, tok := range strings.Split(f, ".") {
				literal = literal || (tok != "*" && tok != ">" && tok != "")
			}
			if !literal || strings.HasPrefix(f, "_INBOX") || strings.HasPrefix(f, "$") {
				t.Errorf("VOIK_SUBJECTS filter %q: name the subjects to capture", f)
			}
		}
	})

	// One group of the NATS pods' voiks: a fixed name, each member named
	// after its pod, and as many members as NATS servers.
	t.Run("group", func(t *testing.T) {
		group := env["VOIK_GROUP"]
		if group.ValueFrom != nil || !regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`).MatchString(group.Value) {
			t.Errorf("VOIK_GROUP %+v: want a fixed name of letters, digits, - and _", group)
		}
		instance := env["VOIK_INSTANCE"]
		if instance.Value != "" || instance.ValueFrom == nil || instance.ValueFrom.FieldRef == nil || instance.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("VOIK_INSTANCE %+v: want the pod's name (fieldRef metadata.name), stable across restarts", instance)
		}
		c := v.Config.Cluster
		if !c.Enabled || c.Replicas < 3 || c.Replicas%2 == 0 || c.Replicas > 7 {
			t.Errorf("config.cluster %+v: want a NATS cluster of 3, 5 or 7 servers (JetStream's quorum, and voik's majority)", c)
		}
		if got := env["VOIK_REPLICAS"].Value; got != strconv.Itoa(c.Replicas) {
			t.Errorf("VOIK_REPLICAS %q, config.cluster.replicas %d: every pod's voik is a member", got, c.Replicas)
		}
		if s.Spec.Replicas == nil || int(*s.Spec.Replicas) != c.Replicas {
			t.Errorf("the stand-in has %v replicas, the values' cluster %d: testdata/nats-chart-statefulset.yaml is out of step", s.Spec.Replicas, c.Replicas)
		}
	})

	// A group keeps its state in JetStream: on, with a file store on a
	// claim of its own (a small one is enough for the VOIK_GROUPS bucket).
	t.Run("jetstream", func(t *testing.T) {
		js := v.Config.JetStream
		if !js.Enabled {
			t.Fatal("config.jetstream.enabled is not true: voik's group has nowhere to keep its state, and every member exits")
		}
		if f := js.FileStore; (f.Enabled != nil && !*f.Enabled) || (f.PVC.Enabled != nil && !*f.PVC.Enabled) {
			t.Errorf("JetStream file store %+v: want it on a claim, so the group's state survives a restart", f)
		}
		size, err := resource.ParseQuantity(js.FileStore.PVC.Size)
		if err != nil || size.Sign() <= 0 || size.Cmp(resource.MustParse("10Gi")) > 0 {
			t.Errorf("config.jetstream.fileStore.pvc.size %q: want a small claim (the bucket holds a few hundred bytes per group)", js.FileStore.PVC.Size)
		}
		if got := claimNames(s); !slices.Equal(got, []string{"nats-js", "voik-data"}) {
			t.Errorf("claims %v, want JetStream's (nats-js) kept and voik-data added", got)
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
		// Readiness on /healthz, not /readyz: a NATS pod is in the NATS
		// Service only while all its containers are ready, and /readyz is
		// not ready while voik catches up or the group has no leader.
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
		}{{"startup", voik.StartupProbe}, {"liveness", voik.LivenessProbe}, {"readiness", voik.ReadinessProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", p.name)
				continue
			}
			if p.probe.HTTPGet.Path != "/healthz" || p.probe.HTTPGet.Port.String() != voik.Ports[0].Name {
				t.Errorf("%s probe on %s port %s, want /healthz on %s (readiness too: /readyz would take NATS out of its Service while voik catches up)",
					p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), voik.Ports[0].Name)
			}
		}
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

	// NATS users: voik's may use $VOIK.>, no other may; each password is an
	// env var of the NATS container, and voik's is the same Secret key
	// voik's container logs in with.
	t.Run("permissions", func(t *testing.T) {
		users := natsUsers(t, v)
		voikUser := env["VOIK_NATS_USER"].Value
		natsEnv := envMap(container(t, pod, "nats"))
		for _, u := range users {
			variable, ok := strings.CutPrefix(u.Password, "<< $")
			variable, ok2 := strings.CutSuffix(variable, " >>")
			if !ok || !ok2 {
				t.Errorf("user %s: password %q, want << $VARIABLE >> from the NATS container's env", u.User, u.Password)
				continue
			}
			if _, ok := v.Container.Env[variable]; !ok {
				t.Errorf("user %s: $%s is not in container.env", u.User, variable)
			}
			if _, ok := natsEnv[variable]; !ok {
				t.Errorf("user %s: $%s is not in the stand-in's nats container env: testdata/nats-chart-statefulset.yaml is out of step", u.User, variable)
			}
			pub, sub := u.Permissions.Publish, u.Permissions.Subscribe
			if u.User == voikUser {
				if !slices.Contains(pub.Allow, ">") || !slices.Contains(sub.Allow, ">") || slices.Contains(pub.Deny, "$VOIK.>") || slices.Contains(sub.Deny, "$VOIK.>") {
					t.Errorf("voik's user %s: permissions %+v, want > allowed", u.User, u.Permissions)
				}
				if !slices.Contains(sub.Deny, "_INBOX.>") {
					t.Errorf("voik's user %s may subscribe to _INBOX.>: its filters would be sent every client's replies", u.User)
				}
				want := natsEnv[variable].ValueFrom
				got := env["VOIK_NATS_PASSWORD"].ValueFrom
				if want == nil || got == nil || want.SecretKeyRef == nil || got.SecretKeyRef == nil || *want.SecretKeyRef != *got.SecretKeyRef {
					t.Errorf("voik logs in with password %+v, NATS expects %+v", got, want)
				}
				continue
			}
			for _, deny := range []string{"$VOIK.>", "$KV.VOIK_GROUPS.>"} {
				if !slices.Contains(pub.Deny, deny) || !slices.Contains(sub.Deny, deny) {
					t.Errorf("user %s may publish or subscribe to %s (deny: publish %v, subscribe %v)", u.User, deny, pub.Deny, sub.Deny)
				}
			}
		}
		if !slices.ContainsFunc(users, func(u natsUser) bool { return u.User == voikUser }) || len(users) < 2 {
			t.Errorf("users %v: want voik's (%s) and another", users, voikUser)
		}
	})
}

func claimNames(s *appsv1.StatefulSet) []string {
	var names []string
	for _, c := range s.Spec.VolumeClaimTemplates {
		names = append(names, c.Name)
	}
	return names
}

// natsUser is a user of the NATS config's authorization block.
type natsUser struct {
	User        string `json:"user"`
	Password    string `json:"password"`
	Permissions struct {
		Publish   natsSubjects `json:"publish"`
		Subscribe natsSubjects `json:"subscribe"`
	} `json:"permissions"`
}

type natsSubjects struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

func natsUsers(t *testing.T, v sidecarValues) []natsUser {
	t.Helper()
	var auth struct {
		Users []natsUser `json:"users"`
	}
	data, err := json.Marshal(v.Config.Merge["authorization"])
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &auth); err != nil {
		t.Fatalf("config.merge.authorization: %v", err)
	}
	return auth.Users
}

// TestSidecarClaimNeedsJetStreamsClaim: with JetStream's file store the NATS
// chart renders a claim template already, and the example adds voik's to
// the list (`/-`). Without one the list is absent and that op fails, as the
// NATS chart's does; the form in the example's comment adds the whole list.
func TestSidecarClaimNeedsJetStreamsClaim(t *testing.T) {
	withJS, err := os.ReadFile(filepath.Join("testdata", "nats-chart-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(withJS)
	i := strings.Index(text, "\n  volumeClaimTemplates:\n")
	if i < 0 {
		t.Fatal("the stand-in has no volumeClaimTemplates")
	}
	withoutJS := []byte(text[:i] + "\n  volumeClaimTemplates:\n")

	v := readSidecarValues(t)
	op := v.StatefulSet.Patch[0]
	if op["path"] != "/spec/volumeClaimTemplates/-" {
		t.Fatalf("the example's statefulSet.patch is %v; update this test", op)
	}
	s, err := applyNATSChart(t, withJS, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := claimNames(s); !slices.Equal(got, []string{"nats-js", "voik-data"}) {
		t.Errorf("with JetStream's claim: claims %v, want nats-js and voik-data", got)
	}
	if _, err := applyNATSChart(t, withoutJS, v); err == nil {
		t.Error("/- on an absent list should fail")
	}
	op["path"] = "/spec/volumeClaimTemplates"
	op["value"] = []any{op["value"]}
	s, err = applyNATSChart(t, withoutJS, v)
	if err != nil {
		t.Fatal(err)
	}
	if got := claimNames(s); !slices.Equal(got, []string{"voik-data"}) {
		t.Errorf("without JetStream's claim, the whole list: claims %v, want voik-data", got)
	}
}
