package localruntime

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestPlan(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := func(name, hash string, ready bool, age int) replica {
		return replica{Name: name, Hash: hash, Ready: ready, Created: t0.Add(-time.Duration(age) * time.Second)}
	}
	for name, tc := range map[string]struct {
		desired   int
		active    []replica
		wantStart int
		wantStop  []string
	}{
		"from zero": {2, nil, 2, nil},
		"steady":    {2, []replica{r("a", "h", true, 5), r("b", "h", true, 4)}, 0, nil},
		"to zero":   {0, []replica{r("a", "h", true, 5), r("b", "h", false, 4)}, 0, []string{"b", "a"}},
		"unready and newest go first": {
			1, []replica{r("old", "h", true, 9), r("new", "h", true, 1), r("cold", "h", false, 5)}, 0, []string{"cold", "new"},
		},
		"old template stays until the new one is ready": {
			1, []replica{r("old", "x", true, 9), r("new", "h", false, 1)}, 0, nil,
		},
		"old template goes once the new one is ready": {
			1, []replica{r("old", "x", true, 9), r("new", "h", true, 1)}, 0, []string{"old"},
		},
		"rollout starts new pods": {
			2, []replica{r("o1", "x", true, 9), r("o2", "x", true, 8)}, 2, nil,
		},
		"rollout keeps only the old pods still needed": {
			2, []replica{r("o1", "x", true, 9), r("o2", "x", false, 8), r("n1", "h", true, 1), r("n2", "h", false, 1)}, 0, []string{"o2"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			start, stop := plan(tc.desired, "h", tc.active)
			if start != tc.wantStart || !slices.Equal(stop, tc.wantStop) {
				t.Fatalf("plan = start %d, stop %v; want start %d, stop %v", start, stop, tc.wantStart, tc.wantStop)
			}
		})
	}
}

func deployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: "models", UID: "d-uid", Generation: 3},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "digits"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "model", Image: "nemesis", Command: []string{"nemesis", "demo-model"}, Args: []string{"--listen", "127.0.0.1:9000"},
					Env: []corev1.EnvVar{
						{Name: "PLAIN", Value: "1"},
						{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					},
					Ports:          []corev1.ContainerPort{{Name: "model", ContainerPort: 9000}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
				}}},
			},
		},
	}
}

func TestNewPodAddsTheSidecarAndOwnsThePodByTheDeployment(t *testing.T) {
	d := deployment()
	pod := newPod(d, "node-a", "digits-abc-xyz12", "abc")
	if pod.Spec.NodeName != "node-a" || pod.Labels["app"] != "digits" || pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != "abc" {
		t.Fatalf("pod meta %+v node %q", pod.ObjectMeta, pod.Spec.NodeName)
	}
	if o := pod.OwnerReferences; len(o) != 1 || o[0].UID != "d-uid" || !*o[0].Controller {
		t.Fatalf("owners %+v", o)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Containers[1].Name != SidecarName {
		t.Fatalf("containers %+v", pod.Spec.Containers)
	}
	if d.Spec.Template.Spec.Containers[0].Name != "model" || len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("newPod changed the deployment's template")
	}
	if templateHash(&d.Spec.Template) != templateHash(&deployment().Spec.Template) {
		t.Fatal("template hash is not stable")
	}
	d.Spec.Template.Spec.Containers[0].Args = nil
	if templateHash(&d.Spec.Template) == templateHash(&deployment().Spec.Template) {
		t.Fatal("template hash ignores a change")
	}
}

func TestModelSpec(t *testing.T) {
	pod := newPod(deployment(), "node-a", "digits-abc-xyz12", "abc")
	spec, err := modelSpec(pod, "10.213.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(spec.Argv, " ") != "nemesis demo-model --listen 127.0.0.1:9000" || spec.Port != 9000 || spec.HealthPath != "/ready" ||
		strings.Join(spec.Env, " ") != "PLAIN=1 POD=digits-abc-xyz12 IP=10.213.0.2" {
		t.Fatalf("spec %+v", spec)
	}

	for name, tc := range map[string]struct {
		change func(c *corev1.Container)
		want   string
	}{
		"image only": {func(c *corev1.Container) { c.Command = nil }, "set its command"},
		"no port":    {func(c *corev1.Container) { c.Ports = nil }, "containerPort"},
		"secret env": {func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{}}}}
		}, "only fieldRef"},
	} {
		t.Run(name, func(t *testing.T) {
			d := deployment()
			tc.change(&d.Spec.Template.Spec.Containers[0])
			if _, err := modelSpec(newPod(d, "n", "p", "h"), "10.213.0.2"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestEndpointSlicesListThePodsAServiceSelects(t *testing.T) {
	d := deployment()
	svc := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "digits", Namespace: "models", UID: "s-uid"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "digits"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "direct", Port: 81, TargetPort: intstr.FromString("model")},
			{Name: "missing", Port: 82, TargetPort: intstr.FromString("nope")},
		}},
	}
	other := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "models"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "other"}},
	}
	view := func(name, ip string, ready, terminating bool) podView {
		p := newPod(d, "node-a", name, "h")
		p.UID = types.UID("uid-" + name)
		return podView{Pod: p, Deployment: "digits", Hash: "h", IP: ip, Ready: ready, Terminating: terminating}
	}
	got := endpointSlices("node-a", []corev1.Service{svc, other}, []appsv1.Deployment{*d}, []podView{
		view("b", "10.213.0.6", true, false),
		view("a", "10.213.0.2", false, false),
		view("c", "10.213.0.10", true, true),
		view("starting", "", false, false),
	})
	if len(got) != 1 {
		t.Fatalf("%d slices, want 1 (for digits only)", len(got))
	}
	sl := got[0]
	if sl.Name != "digits-node-a" || sl.Labels["kubernetes.io/service-name"] != "digits" ||
		sl.Labels["endpointslice.kubernetes.io/managed-by"] != ManagedBy || sl.Labels[LabelNode] != "node-a" {
		t.Fatalf("slice meta %+v", sl.ObjectMeta)
	}
	if len(sl.Ports) != 2 || *sl.Ports[0].Name != "http" || *sl.Ports[0].Port != SidecarPort || *sl.Ports[1].Name != "direct" || *sl.Ports[1].Port != 9000 {
		t.Fatalf("ports %+v", sl.Ports)
	}
	type ep struct {
		name, ip                  string
		ready, serving, terminate bool
	}
	var eps []ep
	for _, e := range sl.Endpoints {
		eps = append(eps, ep{e.TargetRef.Name, e.Addresses[0], *e.Conditions.Ready, *e.Conditions.Serving, *e.Conditions.Terminating})
	}
	want := []ep{
		{"a", "10.213.0.2", false, false, false},
		{"b", "10.213.0.6", true, true, false},
		{"c", "10.213.0.10", false, true, true},
	}
	if !slices.Equal(eps, want) {
		t.Fatalf("endpoints %+v, want %+v", eps, want)
	}
}

func TestDeploymentStatusCountsActivePods(t *testing.T) {
	d := deployment()
	hash := templateHash(&d.Spec.Template)
	pod := newPod(d, "n", "p", hash)
	now := metav1.Now()
	s := deploymentStatus(d, hash, []podView{
		{Pod: pod, Deployment: "digits", Hash: hash, Ready: true},
		{Pod: pod, Deployment: "digits", Hash: "old", Ready: false},
		{Pod: pod, Deployment: "digits", Hash: hash, Ready: true, Terminating: true},
		{Pod: pod, Deployment: "other", Hash: hash, Ready: true},
	}, now)
	if s.Replicas != 2 || s.ReadyReplicas != 1 || s.AvailableReplicas != 1 || s.UpdatedReplicas != 1 || s.UnavailableReplicas != 1 || s.ObservedGeneration != 3 {
		t.Fatalf("status %+v", s)
	}
	if s.Conditions[0].Status != corev1.ConditionFalse {
		t.Fatalf("available with 1 of 2: %+v", s.Conditions)
	}
}
