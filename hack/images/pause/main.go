// Command pause holds a pod's namespaces for the test node's containerd (its
// sandbox_image, hack/cluster): the role of registry.k8s.io/pause, built here
// because no registry serves images on this machine. It waits for SIGTERM or
// SIGINT and, as PID 1 of a pod that shares its process namespace, reaps
// orphaned children.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
