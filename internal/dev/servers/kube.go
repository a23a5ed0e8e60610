package servers

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubeConfig says how to start a Kubernetes API server.
type KubeConfig struct {
	// Dir holds the logs of etcd and kube-apiserver.
	Dir string
	// CRDDir holds CustomResourceDefinitions to install once it is up.
	CRDDir string
}

// Kube is a running kube-apiserver with its etcd, started through
// controller-runtime's envtest on the binaries `make tools` builds.
type Kube struct {
	Config *rest.Config
	env    *envtest.Environment
	logs   []*os.File
}

// StartKube starts etcd and kube-apiserver and installs the CRDs.
func StartKube(cfg KubeConfig) (*Kube, error) {
	tools, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	k := &Kube{env: &envtest.Environment{
		BinaryAssetsDirectory:    tools,
		CRDDirectoryPaths:        []string{cfg.CRDDir},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}}
	apiServer := k.env.ControlPlane.GetAPIServer()
	etcd := k.env.ControlPlane.Etcd
	if etcd == nil {
		etcd = &envtest.Etcd{}
		k.env.ControlPlane.Etcd = etcd
	}
	apiLog, err := os.Create(filepath.Join(cfg.Dir, "kube-apiserver.log"))
	if err != nil {
		return nil, fmt.Errorf("creating kube-apiserver log: %w", err)
	}
	etcdLog, err := os.Create(filepath.Join(cfg.Dir, "etcd.log"))
	if err != nil {
		_ = apiLog.Close()
		return nil, fmt.Errorf("creating etcd log: %w", err)
	}
	k.logs = []*os.File{apiLog, etcdLog}
	apiServer.Out, apiServer.Err = apiLog, apiLog
	etcd.Out, etcd.Err = etcdLog, etcdLog
	k.Config, err = k.env.Start()
	if err != nil {
		k.closeLogs()
		return nil, fmt.Errorf("starting kube-apiserver: %w\n%s", err, tail(apiLog.Name(), 4096))
	}
	return k, nil
}

// Stop stops kube-apiserver and etcd.
func (k *Kube) Stop() error {
	defer k.closeLogs()
	if err := k.env.Stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	return nil
}

// Logs returns the tails of the API server's and etcd's logs.
func (k *Kube) Logs(maxBytes int64) string {
	out := ""
	for _, f := range k.logs {
		out += fmt.Sprintf("--- %s ---\n%s\n", filepath.Base(f.Name()), tail(f.Name(), maxBytes))
	}
	return out
}

func (k *Kube) closeLogs() {
	for _, f := range k.logs {
		_ = f.Close()
	}
}

// KubeConfig returns a kubeconfig for an admin (system:masters) user, for
// kubectl and other clients outside this process.
func (k *Kube) KubeConfig() ([]byte, error) {
	user, err := k.env.AddUser(envtest.User{Name: "nemesis-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kubeconfig user: %w", err)
	}
	cfg, err := user.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("writing kubeconfig: %w", err)
	}
	return cfg, nil
}
