// Command nemesis is the Nemesis control plane for ML inference endpoints
// behind Envoy, as shipped in the image: serve, migrate, certgen, sidecar, logship and version.
// Development tools live in cmd/nemesis-dev; deps_test.go keeps them out.
package main

import "github.com/nemesis-ml/nemesis/internal/command"

type cli struct {
	command.LogFlags
	Serve   command.Serve   `cmd:"" help:"Run the control plane: HTTP APIs, health and metrics."`
	Migrate command.Migrate `cmd:"" help:"Apply pending database migrations and exit."`
	Certgen command.Certgen `cmd:"" help:"Write the gRPC port's CA, serve's serving pair and one client pair per environment, into a folder or Secrets."`
	Sidecar command.Sidecar `cmd:"" help:"Run in a model pod: proxy to the model, meter the pod, push samples to the controller."`
	Logship command.Logship `cmd:"" help:"Run in Envoy's pod when serve has Envoy log to a file: stream the file's entries to serve."`
	Version command.Version `cmd:"" help:"Print the version."`
}

func main() {
	var c cli
	command.Main(&c, &c.LogFlags, "nemesis", "Control plane for ML inference endpoints behind Envoy.")
}
