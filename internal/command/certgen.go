package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/internal/kubescheme"
	"github.com/nemesis-ml/nemesis/internal/pki"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

// Certgen writes the gRPC port's certificates: a CA, serve's serving pair
// and one client pair per environment, into a folder, Kubernetes Secrets or
// both. Run again to rotate: every pair is new.
type Certgen struct {
	kubeFlags
	Environments []string      `help:"Environments (Envoy node clusters) to make a client pair for." required:"" env:"NEMESIS_CERTGEN_ENVIRONMENTS"`
	ServerNames  []string      `help:"DNS names and IP addresses of serve's gRPC port (the name nemesis is always added)." default:"nemesis.nemesis-system.svc,nemesis.nemesis-system.svc.cluster.local,localhost,127.0.0.1" env:"NEMESIS_CERTGEN_SERVER_NAMES"`
	ValidFor     time.Duration `help:"How long the certificates are valid." default:"8760h" env:"NEMESIS_CERTGEN_VALID_FOR"`
	OutDir       string        `help:"Write the pairs into this folder: serve/ and envoy-<environment>/, each with ca.crt, tls.crt and tls.key." env:"NEMESIS_CERTGEN_OUT_DIR"`
	Namespace    string        `help:"Write the pairs as Secrets (nemesis-serve-tls, nemesis-envoy-<environment>-tls) in this namespace." env:"NEMESIS_CERTGEN_NAMESPACE"`
}

// Run generates and writes the bundle.
func (c Certgen) Run(ctx context.Context, log *slog.Logger) error {
	if c.OutDir == "" && c.Namespace == "" {
		return errors.New("certgen needs --out-dir, --namespace or both")
	}
	for _, env := range c.Environments {
		if err := settings.ValidEnvironment(env); err != nil {
			return fmt.Errorf("--environments: %w", err)
		}
	}
	b, err := pki.Generate(c.Environments, c.ServerNames, c.ValidFor)
	if err != nil {
		return err
	}
	if c.OutDir != "" {
		if err := b.WriteDirs(c.OutDir); err != nil {
			return err
		}
		log.Info("certificates written", "dir", c.OutDir, "environments", c.Environments)
	}
	if c.Namespace == "" {
		return nil
	}
	kube, err := c.restConfig()
	if err != nil {
		return err
	}
	scheme, err := kubescheme.New()
	if err != nil {
		return err
	}
	cl, err := client.New(kube, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating kubernetes client: %w", err)
	}
	if err := writeSecret(ctx, cl, c.Namespace, pki.ServeSecret, b.Serve); err != nil {
		return err
	}
	for env, p := range b.Envoys {
		if err := writeSecret(ctx, cl, c.Namespace, pki.EnvoySecret(env), p); err != nil {
			return err
		}
	}
	log.Info("certificates written as secrets", "namespace", c.Namespace, "environments", c.Environments)
	return nil
}

// writeSecret creates or replaces a kubernetes.io/tls Secret holding p.
func writeSecret(ctx context.Context, cl client.Client, namespace, name string, p pki.Pair) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "nemesis", "app.kubernetes.io/managed-by": "nemesis-certgen"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{pki.CAFile: p.CA, corev1.TLSCertKey: p.Cert, corev1.TLSPrivateKeyKey: p.Key},
	}
	err := cl.Create(ctx, s)
	if apierrors.IsAlreadyExists(err) {
		err = cl.Update(ctx, s)
	}
	if err != nil {
		return fmt.Errorf("writing secret %s/%s: %w", namespace, name, err)
	}
	return nil
}
