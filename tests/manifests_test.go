package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/nemesis-ml/nemesis/internal/dev/servers"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// The identities manifests/rbac/binding.yaml gives the control plane and
// certgen/rbac.yaml the certgen Job.
const (
	serviceAccount        = "system:serviceaccount:nemesis-system:nemesis"
	certgenServiceAccount = "system:serviceaccount:nemesis-system:nemesis-certgen"
)

// TestManifestsApply applies manifests/ as `kubectl apply -k` would, with
// strict field validation, and the examples beside it as a dry run: the API
// server accepts every object as written.
func TestManifestsApply(t *testing.T) {
	c := testenv.KubeClient(t)
	applyManifests(t, c)

	var deploy appsv1.Deployment
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "nemesis-system", Name: "nemesis"}, &deploy); err != nil {
		t.Fatal(err)
	}
	sc := deploy.Spec.Template.Spec.Containers[0].SecurityContext
	if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || deploy.Spec.Template.Spec.SecurityContext.RunAsNonRoot == nil {
		t.Fatalf("control plane not read-only and non-root: %+v", deploy.Spec.Template.Spec)
	}

	root := testenv.RepoRoot(t)
	for _, dir := range []string{"samples", "sample-model", filepath.Join("monitoring", "dashboards")} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "models"}}
		if err := c.Create(t.Context(), ns); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(root, "manifests", dir, "*.yaml"))
		for _, f := range files {
			for _, obj := range readObjects(t, f) {
				if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(obj),
					client.FieldOwner("nemesis-tests"), client.DryRunAll); err != nil {
					t.Errorf("%s: %s %s: %v", f, obj.GetKind(), obj.GetName(), err)
				}
			}
		}
	}
}

// TestControlPlaneRunsWithItsRole runs nemesis serve as the service account
// of the manifests, so the generated role must grant everything it uses:
// routes reach Envoy, the controller scales its target and records status,
// and nothing is forbidden.
func TestControlPlaneRunsWithItsRole(t *testing.T) {
	c := testenv.KubeClient(t)
	s := newStack(t)
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "a")
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: s.namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "demo"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "demo"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "model"}}},
			},
		},
	}
	if err := c.Create(t.Context(), deploy); err != nil {
		t.Fatal(err)
	}
	s.publish("demo", "/models/demo", backends)
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/demo", 1)
	code, body, err := get(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/models/demo", s.envoyPort))
	if err != nil || code != http.StatusOK || body != "a" {
		t.Fatalf("through Envoy: %d %q %v", code, body, err)
	}
	// minReplicas is 1: the controller raises the Deployment through the
	// scale subresource.
	testenv.Eventually(t, 30*time.Second, "deployment scaled to minReplicas", func() error {
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(deploy), deploy); err != nil {
			return err
		}
		if got := ptr.Deref(deploy.Spec.Replicas, 0); got != 1 {
			return fmt.Errorf("replicas %d", got)
		}
		return nil
	})
	log, err := os.ReadFile(s.serve.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ToLower(log), []byte("forbidden")) {
		t.Fatalf("serve was refused something by RBAC:\n%s", log)
	}
}

// TestCertgenWritesSecretsWithItsRole runs nemesis certgen as the Job's
// service account, twice (the second run rotates): its role lets it write
// the Secrets the control plane and the Envoys mount, and nothing forbids it.
func TestCertgenWritesSecretsWithItsRole(t *testing.T) {
	c := testenv.KubeClient(t)
	applyManifests(t, c)
	kubeconfig := testenv.KubeConfigFileAs(t, certgenServiceAccount)
	var first []byte
	for run := range 2 {
		out, err := exec.CommandContext(t.Context(), nemesisBin, "certgen", "--kubeconfig", kubeconfig,
			"--namespace", "nemesis-system", "--environments", "default,staging").CombinedOutput()
		if err != nil {
			t.Fatalf("certgen run %d: %v\n%s", run, err, out)
		}
		for _, name := range []string{"nemesis-serve-tls", "nemesis-envoy-default-tls", "nemesis-envoy-staging-tls"} {
			var s corev1.Secret
			if err := c.Get(t.Context(), client.ObjectKey{Namespace: "nemesis-system", Name: name}, &s); err != nil {
				t.Fatal(err)
			}
			if s.Type != corev1.SecretTypeTLS || len(s.Data["ca.crt"]) == 0 || len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0 {
				t.Fatalf("secret %s: type %s, keys %v", name, s.Type, len(s.Data))
			}
			if name == "nemesis-serve-tls" {
				if run == 1 && bytes.Equal(first, s.Data["tls.crt"]) {
					t.Fatal("the second run did not replace serve's pair")
				}
				first = s.Data["tls.crt"]
			}
		}
	}
}

// applyManifests server-side applies every resource of
// manifests/kustomization.yaml in order, and lets the service account elect
// leaders in the namespaces the tests' stacks use.
func applyManifests(t *testing.T, c client.Client) {
	t.Helper()
	root := testenv.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "manifests", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatal(err)
	}
	for _, res := range k.Resources {
		for _, obj := range readObjects(t, filepath.Join(root, "manifests", res)) {
			if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(obj),
				client.FieldOwner("nemesis-tests"), client.ForceOwnership); err != nil {
				t.Fatalf("%s: %s %s: %v", res, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
}

// readObjects decodes every YAML document of a file.
func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, obj)
		}
	}
}

// grantLeaderElection binds the manifests' Role, which lets the control
// plane hold its Lease, in namespace too.
func grantLeaderElection(t *testing.T, c client.Client, namespace string) {
	t.Helper()
	var role rbacv1.Role
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "nemesis-system", Name: "nemesis"}, &role); err != nil {
		t.Fatal(err)
	}
	copyRole := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "nemesis", Namespace: namespace}, Rules: role.Rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "nemesis", Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "nemesis"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "nemesis", Namespace: "nemesis-system"}},
	}
	for _, obj := range []client.Object{copyRole, binding} {
		if err := c.Create(t.Context(), obj); err != nil {
			t.Fatal(strings.TrimSpace(err.Error()))
		}
	}
}

// TestEnvoyManifestServesItsStatsAlone runs Envoy with the stats listener of
// manifests/envoy/deployment.yaml (its ports moved to free ones): Prometheus
// gets /stats/prometheus on it, and nothing else of the admin interface.
func TestEnvoyManifestServesItsStatsAlone(t *testing.T) {
	var deploy *unstructured.Unstructured
	for _, obj := range readObjects(t, filepath.Join(testenv.RepoRoot(t), "manifests", "envoy", "deployment.yaml")) {
		if obj.GetKind() == "Deployment" {
			deploy = obj
		}
	}
	annotations, _, _ := unstructured.NestedStringMap(deploy.Object, "spec", "template", "metadata", "annotations")
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	envoy := containers[0].(map[string]any)
	overlay := ""
	for _, e := range envoy["env"].([]any) {
		if env := e.(map[string]any); env["name"] == "STATS_LISTENER" {
			overlay = env["value"].(string)
		}
	}
	statsPort := ""
	for _, p := range envoy["ports"].([]any) {
		if port := p.(map[string]any); port["name"] == "stats" {
			statsPort = fmt.Sprint(port["containerPort"])
		}
	}
	if annotations["prometheus.io/port"] != "9902" || statsPort != "9902" || annotations["prometheus.io/path"] != "/stats/prometheus" ||
		!strings.Contains(overlay, "port_value: 9902") || !strings.Contains(overlay, "port_value: 9901") {
		t.Fatalf("the annotations %v, the stats port %q and the listener must agree on :9902, admin on :9901:\n%s", annotations, statsPort, overlay)
	}

	s := newStack(t)
	admin, stats := testenv.Port(t), testenv.Port(t)
	overlay = strings.NewReplacer("port_value: 9901", fmt.Sprintf("port_value: %d", admin),
		"port_value: 9902", fmt.Sprintf("port_value: %d", stats)).Replace(overlay)
	testenv.ProjectEnvoy(t, s.xdsAddr, servers.EnvoyConfig{NodeID: "stats", Cluster: s.env, AdminPort: admin, Overlay: overlay,
		TLSDir: filepath.Join(s.tls.Dir, pki.EnvoyDir(s.env))})
	base := fmt.Sprintf("http://127.0.0.1:%d", stats)
	code, body, err := get(http.DefaultClient, base+"/stats/prometheus")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "envoy_server_live") {
		t.Fatalf("GET /stats/prometheus on the stats listener: %d %v\n%.300s", code, err, body)
	}
	for _, path := range []string{"/config_dump", "/stats", "/clusters", "/quitquitquit"} {
		if code, _, err := get(http.DefaultClient, base+path); err != nil || code != http.StatusNotFound {
			t.Errorf("GET %s on the stats listener: %d %v, want 404", path, code, err)
		}
	}
}
