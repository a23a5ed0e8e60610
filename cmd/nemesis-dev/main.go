// Command nemesis-dev is the development build of nemesis: every command of
// the shipped binary, plus `dev` (the whole stack on this machine, what
// `make run` starts), `demo-model` and `text-model`. It is never put in an image.
package main

import "github.com/nemesis-ml/nemesis/internal/command"

type cli struct {
	command.LogFlags
	Serve     command.Serve   `cmd:"" help:"Run the control plane: HTTP APIs, health and metrics."`
	Migrate   command.Migrate `cmd:"" help:"Apply pending database migrations and exit."`
	Certgen   command.Certgen `cmd:"" help:"Write the gRPC port's CA, serve's serving pair and one client pair per environment, into a folder or Secrets."`
	Dev       devCmd          `cmd:"" help:"Run the whole stack on this machine: PostgreSQL, Redis, kube-apiserver, serve, Envoy, the local runtime and the demo model."`
	Sidecar   command.Sidecar `cmd:"" help:"Run in a model pod: proxy to the model, meter the pod, push samples to the controller."`
	Logship   command.Logship `cmd:"" help:"Run in Envoy's pod when serve has Envoy log to a file: stream the file's entries to serve."`
	DemoModel demoModelCmd    `cmd:"" name:"demo-model" help:"Serve the demo model: a digit classifier trained at start-up, for nemesis-dev dev."`
	TextModel textModelCmd    `cmd:"" name:"text-model" help:"Serve the streaming demo model: OpenAI-style completions from a bigram model, one token per server-sent event."`
	Version   command.Version `cmd:"" help:"Print the version."`
}

func main() {
	var c cli
	command.Main(&c, &c.LogFlags, "nemesis-dev", "Nemesis with its development tools: the whole stack on this machine.")
}
