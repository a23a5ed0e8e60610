package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/internal/dev/localruntime"
)

// startLocalRuntime runs the local runtime until the returned stop is
// called; stop waits until every pod it ran is gone.
func startLocalRuntime(ctx context.Context, log *slog.Logger, cfg localruntime.Config) (stop func() error, err error) {
	if cfg.Nemesis, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("finding the nemesis binary: %w", err)
	}
	cfg.Log = log
	rt, err := localruntime.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	return func() error { cancel(); return <-done }, nil
}

// applyDemo creates the objects of a manifest file that do not exist yet,
// setting the CustomAutoscalers' route to environment env.
func applyDemo(ctx context.Context, kube *rest.Config, path, env string) error {
	c, err := client.New(kube, client.Options{})
	if err != nil {
		return fmt.Errorf("creating kubernetes client: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading the demo: %w", err)
	}
	defer func() { _ = f.Close() }()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("decoding %s: %w", path, err)
		}
		if obj.Object == nil {
			continue
		}
		if obj.GetKind() == "CustomAutoscaler" {
			if err := unstructured.SetNestedField(obj.Object, env, "spec", "route", "environment"); err != nil {
				return fmt.Errorf("setting the demo's environment: %w", err)
			}
		}
		if err := c.Create(ctx, &obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
	}
}

// waitDemoReady waits until the demo Deployment has a ready replica.
func waitDemoReady(ctx context.Context, kube *rest.Config, namespace, name string, timeout time.Duration) error {
	c, err := client.New(kube, client.Options{})
	if err != nil {
		return fmt.Errorf("creating kubernetes client: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
			return false, nil
		}
		return d.Status.ReadyReplicas > 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for deployment %s/%s to be ready: %w", namespace, name, err)
	}
	return nil
}

// demoFiles writes the request body and the wrk script that the printed
// commands use into dir.
func demoFiles(dir string) error {
	seven := `{"image":["........",".#####..",".....#..","....#...","...#....","...#....","...#....","........"]}`
	files := map[string]string{
		"seven.json":  seven + "\n",
		"predict.lua": "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '" + seven + "'\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// printProtocolDemos prints the commands that try manifests/demo/protocols.yaml:
// each model is at zero, so its first request is held while it wakes.
func printProtocolDemos(w io.Writer, envoyPort int) {
	envoy := fmt.Sprintf("127.0.0.1:%d", envoyPort)
	_, _ = fmt.Fprintf(w, "\nProtocols (docs/protocols.md; each model wakes from zero on its first request):\n")
	_, _ = fmt.Fprintf(w, "  .tools/venv/bin/python tests/clients/triton_digits.py --url %s --protocol grpc --model digits --authority digits.demo.local --digit 7    # MLServer over gRPC, routed by :authority\n", envoy)
	_, _ = fmt.Fprintf(w, "  .tools/venv/bin/python tests/clients/openai_stream.py --base-url http://%s/models/chat/v1 --max-tokens 16    # tokens one by one\n", envoy)
	_, _ = fmt.Fprintf(w, "  curl -sN -d '{\"model\":\"ngram\",\"prompt\":\"A model\",\"max_tokens\":16,\"stream\":true}' http://%s/models/chat/v1/completions\n", envoy)
	_, _ = fmt.Fprintf(w, "  .tools/venv/bin/python tests/clients/ws_echo.py --url ws://%s/models/chat/v1/echo    # WebSocket through Envoy and the sidecar\n", envoy)
}
