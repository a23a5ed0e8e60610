package v1alpha1_test

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

func TestMain(m *testing.M) { testenv.Run(m) }

func namespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func valid(ns string) *v1alpha1.CustomAutoscaler {
	return &v1alpha1.CustomAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "resnet", Namespace: ns},
		Spec: v1alpha1.CustomAutoscalerSpec{
			ScaleTargetRef: v1alpha1.ScaleTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "resnet"},
			MinReplicas:    0,
			MaxReplicas:    10,
			Route:          &v1alpha1.Route{Environment: "production", PathPrefix: "/models/resnet", Service: "resnet", Port: 8080},
			Rules: []v1alpha1.ScalingRule{
				{ID: "cpu-high", Action: v1alpha1.ActionIncreaseInstances, Thresholds: []v1alpha1.Threshold{
					{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 700},
				}},
				{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, Thresholds: []v1alpha1.Threshold{
					{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0},
				}},
			},
		},
	}
}

func TestAPIServerAcceptsAValidAutoscalerWithDefaults(t *testing.T) {
	c := testenv.KubeClient(t)
	ns := namespace(t, c)
	ca := valid(ns)
	ca.Spec.Route.Environment = ""
	if err := c.Create(t.Context(), ca); err != nil {
		t.Fatalf("valid CustomAutoscaler refused: %v", err)
	}
	var got v1alpha1.CustomAutoscaler
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(ca), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Route.Environment != "default" {
		t.Errorf("route.environment defaulted to %q, want default", got.Spec.Route.Environment)
	}
	if got.Spec.Rules[0].WindowSeconds != 30 {
		t.Errorf("rules[0].windowSeconds defaulted to %d, want 30", got.Spec.Rules[0].WindowSeconds)
	}

	// The status subresource is writable on its own.
	got.Status.Replicas = 3
	if err := c.Status().Update(t.Context(), &got); err != nil {
		t.Fatalf("updating status: %v", err)
	}
}

func TestAPIServerRefusesInvalidAutoscalers(t *testing.T) {
	c := testenv.KubeClient(t)
	ns := namespace(t, c)
	for name, tc := range map[string]struct {
		mutate func(*v1alpha1.CustomAutoscaler)
		want   string
	}{
		"unknown metric type": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[0].Thresholds[0].MetricType = "GPU_USAGE" },
			want:   `spec.rules[0].thresholds[0].metricType: Unsupported value: "GPU_USAGE"`,
		},
		"unknown operator": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[0].Thresholds[0].Operator = "ABOVE" },
			want:   `spec.rules[0].thresholds[0].operator: Unsupported value: "ABOVE"`,
		},
		"unknown action": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[0].Action = "PANIC" },
			want:   `spec.rules[0].action: Unsupported value: "PANIC"`,
		},
		"maxReplicas below minReplicas": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) {
				ca.Spec.Rules = ca.Spec.Rules[:1]
				ca.Spec.MinReplicas, ca.Spec.MaxReplicas = 5, 2
			},
			want: "maxReplicas must be greater than or equal to minReplicas",
		},
		"no rules": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules = nil },
			want:   "spec.rules: Required value",
		},
		"empty rules": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules = []v1alpha1.ScalingRule{} },
			want:   "spec.rules: Invalid value",
		},
		"rule without thresholds": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[0].Thresholds = []v1alpha1.Threshold{} },
			want:   "spec.rules[0].thresholds: Invalid value",
		},
		"negative threshold": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[0].Thresholds[0].Value = -1 },
			want:   "spec.rules[0].thresholds[0].value: Invalid value: -1",
		},
		"duplicate rule ids": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Rules[1].ID = ca.Spec.Rules[0].ID },
			want:   `spec.rules[1]: Duplicate value`,
		},
		"scale to zero with minReplicas above zero": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.MinReplicas = 1 },
			want:   "minReplicas must be 0 when a rule scales to zero",
		},
		"environment with capitals": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.Environment = "Prod" },
			want:   "spec.route.environment: Invalid value",
		},
		"path prefix without slash": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.PathPrefix = "models" },
			want:   "spec.route.pathPrefix: Invalid value",
		},
		"port out of range": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.Port = 70000 },
			want:   "spec.route.port: Invalid value",
		},
		"host with a port": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.Hosts = []string{"digits.example:80"} },
			want:   "spec.route.hosts[0]: Invalid value",
		},
		"host twice": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.Hosts = []string{"a.example", "a.example"} },
			want:   "spec.route.hosts[1]: Duplicate value",
		},
		"host as a header": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) {
				ca.Spec.Route.Headers = []v1alpha1.HeaderMatch{{Name: "host", Value: "digits.example"}}
			},
			want: "match the host with hosts, not a header",
		},
		"pseudo-header": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) {
				ca.Spec.Route.Headers = []v1alpha1.HeaderMatch{{Name: ":authority", Value: "digits.example"}}
			},
			want: "spec.route.headers[0].name: Invalid value",
		},
		"empty header value": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) {
				ca.Spec.Route.Headers = []v1alpha1.HeaderMatch{{Name: "x-model", Value: ""}}
			},
			want: "spec.route.headers[0].value: Invalid value",
		},
		"unknown protocol": {
			mutate: func(ca *v1alpha1.CustomAutoscaler) { ca.Spec.Route.Protocol = "grpc" },
			want:   `spec.route.protocol: Unsupported value: "grpc"`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			ca := valid(ns)
			ca.Name = strings.ReplaceAll(name, " ", "-")
			tc.mutate(ca)
			err := c.Create(t.Context(), ca)
			if err == nil {
				t.Fatal("API server accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestDeploymentScalesThroughItsScaleSubresource(t *testing.T) {
	c := testenv.KubeClient(t)
	ns := namespace(t, c)
	labels := map[string]string{"app": "resnet"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "resnet", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "resnet:1"}}},
			},
		},
	}
	if err := c.Create(t.Context(), deploy); err != nil {
		t.Fatal(err)
	}
	scale := &autoscalingv1.Scale{}
	if err := c.SubResource("scale").Get(t.Context(), deploy, scale); err != nil {
		t.Fatal(err)
	}
	if scale.Spec.Replicas != 1 || scale.Status.Selector != "app=resnet" {
		t.Fatalf("scale = %+v", scale)
	}
	scale.Spec.Replicas = 4
	if err := c.SubResource("scale").Update(t.Context(), deploy, client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 10*time.Second)
	if err := c.Get(ctx, client.ObjectKeyFromObject(deploy), deploy); err != nil {
		t.Fatal(err)
	}
	if *deploy.Spec.Replicas != 4 {
		t.Fatalf("deployment replicas = %d after scaling to 4", *deploy.Spec.Replicas)
	}
}
