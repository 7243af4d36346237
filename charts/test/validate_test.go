package charttest

import (
	"fmt"
	"path"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validate checks the rendered objects the way the API server would (names,
// labels, required fields) and for what it would accept but that would not
// work: a selector that misses its pods, a mount without a volume, a probe on
// a port the container does not have. It returns every problem found.
func validate(manifests []manifest) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	seen := map[string]bool{}
	var podLabels labels.Set // the voik pods'
	var voikPorts []corev1.ContainerPort
	services := map[string]*corev1.Service{}
	for _, m := range manifests {
		meta, ok := m.object.(metav1.Object)
		if !ok {
			bad("%s: no metadata", m.source)
			continue
		}
		kind := fmt.Sprintf("%T", m.object)
		key := kind + "/" + meta.GetName()
		if seen[key] {
			bad("%s: two objects %s", m.source, key)
		}
		seen[key] = true
		if meta.GetNamespace() != namespace {
			bad("%s: namespace %q, want the release's %q", m.source, meta.GetNamespace(), namespace)
		}
		for _, msg := range validation.IsDNS1123Subdomain(meta.GetName()) {
			bad("%s: name %q: %s", m.source, meta.GetName(), msg)
		}
		problems = append(problems, checkLabels(m.source, meta.GetLabels())...)
		switch o := m.object.(type) {
		case *appsv1.StatefulSet:
			podLabels = o.Spec.Template.Labels
			if c := findContainer(o.Spec.Template.Spec, "voik"); c != nil {
				voikPorts = c.Ports
			}
		case *corev1.Service:
			services[o.Name] = o
			for _, msg := range validation.IsDNS1035Label(o.Name) {
				bad("%s: Service name %q: %s", m.source, o.Name, msg)
			}
		}
	}
	if podLabels == nil {
		return append(problems, "no StatefulSet")
	}

	for _, m := range manifests {
		switch o := m.object.(type) {
		case *appsv1.StatefulSet:
			problems = append(problems, checkStatefulSet(m.source, o, services)...)
		case *corev1.Pod:
			problems = append(problems, checkPodSpec(m.source, o.Spec, nil)...)
			problems = append(problems, checkLabels(m.source, o.Labels)...)
			if labels.SelectorFromSet(podLabels).Matches(labels.Set(o.Labels)) {
				bad("%s: pod %s has the voik pods' labels: the Services and the PodDisruptionBudget would count it", m.source, o.Name)
			}
		case *corev1.Service:
			if len(o.Spec.Selector) == 0 || !labels.SelectorFromSet(o.Spec.Selector).Matches(podLabels) {
				bad("%s: Service %s selects no voik pod (%v)", m.source, o.Name, o.Spec.Selector)
			}
			for _, p := range o.Spec.Ports {
				if p.TargetPort.Type == intstr.String && !hasPort(voikPorts, p.TargetPort.StrVal) {
					bad("%s: Service %s targets port %q, which the voik container does not have", m.source, o.Name, p.TargetPort.StrVal)
				}
			}
		case *policyv1.PodDisruptionBudget:
			if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
				bad("%s: a PodDisruptionBudget needs exactly one of minAvailable and maxUnavailable", m.source)
			}
			problems = append(problems, checkSelects(m.source, o.Spec.Selector, podLabels)...)
		case *networkingv1.NetworkPolicy:
			problems = append(problems, checkSelects(m.source, &o.Spec.PodSelector, podLabels)...)
			for _, rule := range o.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port != nil && p.Port.Type == intstr.String && !hasPort(voikPorts, p.Port.StrVal) {
						bad("%s: ingress on port %q, which the voik container does not have", m.source, p.Port.StrVal)
					}
				}
			}
		case *monitoringv1.ServiceMonitor:
			var selected []string
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.Selector)
			if err != nil {
				bad("%s: %v", m.source, err)
				break
			}
			for name, s := range services {
				if sel.Matches(labels.Set(s.Labels)) {
					selected = append(selected, name)
					for _, e := range o.Spec.Endpoints {
						if !hasServicePort(s, e.Port) {
							bad("%s: endpoint port %q is not a port of Service %s", m.source, e.Port, name)
						}
					}
				}
			}
			if len(selected) != 1 {
				bad("%s: the ServiceMonitor selects Services %v; want exactly one (else each pod is scraped twice)", m.source, selected)
			}
		}
	}
	return problems
}

func checkLabels(source string, set map[string]string) []string {
	var problems []string
	for k, v := range set {
		for _, msg := range validation.IsQualifiedName(k) {
			problems = append(problems, fmt.Sprintf("%s: label key %q: %s", source, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			problems = append(problems, fmt.Sprintf("%s: label %s value %q: %s", source, k, v, msg))
		}
	}
	return problems
}

func checkSelects(source string, selector *metav1.LabelSelector, podLabels labels.Set) []string {
	if selector == nil {
		return []string{source + ": no selector"}
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", source, err)}
	}
	if sel.Empty() || !sel.Matches(podLabels) {
		return []string{fmt.Sprintf("%s: selector %v does not select the voik pods %v", source, sel, podLabels)}
	}
	return nil
}

func checkStatefulSet(source string, s *appsv1.StatefulSet, services map[string]*corev1.Service) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(source+": "+format, args...))
	}
	problems = append(problems, checkSelects(source, s.Spec.Selector, s.Spec.Template.Labels)...)
	problems = append(problems, checkLabels(source, s.Spec.Template.Labels)...)
	if governing, ok := services[s.Spec.ServiceName]; !ok {
		bad("serviceName %q is not a Service of the release", s.Spec.ServiceName)
	} else if governing.Spec.ClusterIP != corev1.ClusterIPNone {
		bad("serviceName %q is not a headless Service", s.Spec.ServiceName)
	}
	claims := map[string]bool{}
	for _, c := range s.Spec.VolumeClaimTemplates {
		claims[c.Name] = true
		if len(c.Spec.AccessModes) == 0 {
			bad("claim %s has no access modes", c.Name)
		}
		if q, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
			bad("claim %s requests no storage", c.Name)
		}
	}
	return append(problems, checkPodSpec(source, s.Spec.Template.Spec, claims)...)
}

// checkPodSpec checks a pod spec; claims are the StatefulSet's claim
// templates, which a mount may name like a volume.
func checkPodSpec(source string, spec corev1.PodSpec, claims map[string]bool) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(source+": "+format, args...))
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup || claims[v.Name] {
			bad("volume %q twice", v.Name)
		}
		volumes[v.Name] = v
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			bad("volume name %q: %s", v.Name, msg)
		}
		if v.Secret != nil {
			if v.Secret.SecretName == "" {
				bad("volume %q: secret without a name", v.Name)
			}
			for _, item := range v.Secret.Items {
				if item.Key == "" || item.Path == "" || path.IsAbs(item.Path) || strings.Contains(item.Path, "..") {
					bad("volume %q: bad item %+v", v.Name, item)
				}
			}
		}
	}
	names := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		cbad := func(format string, args ...any) { bad("container %s: "+format, append([]any{c.Name}, args...)...) }
		if names[c.Name] {
			cbad("name used twice")
		}
		names[c.Name] = true
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			cbad("name: %s", msg)
		}
		if c.Image == "" {
			cbad("no image")
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			for _, msg := range validation.IsValidPortName(p.Name) {
				cbad("port name %q: %s", p.Name, msg)
			}
			if ports[p.Name] {
				cbad("port %q twice", p.Name)
			}
			ports[p.Name] = true
			for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
				cbad("port %d: %s", p.ContainerPort, msg)
			}
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				cbad("env %q: %s", e.Name, msg)
			}
			if env[e.Name] {
				cbad("env %s twice (the last wins, silently)", e.Name)
			}
			env[e.Name] = true
			if e.Value != "" && e.ValueFrom != nil {
				cbad("env %s has both value and valueFrom", e.Name)
			}
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && (ref.SecretKeyRef.Name == "" || ref.SecretKeyRef.Key == "") {
				cbad("env %s: secretKeyRef without name or key", e.Name)
			}
		}
		mounts := map[string]bool{}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok && !claims[vm.Name] {
				cbad("mount of %q, which is neither a volume nor a claim template", vm.Name)
			}
			if !path.IsAbs(vm.MountPath) || mounts[vm.MountPath] {
				cbad("mount path %q is not absolute or is used twice", vm.MountPath)
			}
			mounts[vm.MountPath] = true
			if v, ok := volumes[vm.Name]; ok && v.Secret != nil && !vm.ReadOnly {
				cbad("secret %q mounted read-write", vm.Name)
			}
		}
		for kind, probe := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			if port := probe.HTTPGet.Port; port.Type == intstr.String && !ports[port.StrVal] {
				cbad("%s probe on port %q, which it does not have", kind, port.StrVal)
			}
		}
	}
	return problems
}

func findContainer(spec corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func hasPort(ports []corev1.ContainerPort, name string) bool {
	for _, p := range ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

func hasServicePort(s *corev1.Service, name string) bool {
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}
