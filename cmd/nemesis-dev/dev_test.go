package main

import (
	"testing"
	"time"
)

// dev runs serve in-process: it must get the defaults serve's flags
// declare, or a flag added to serve starts at its zero value in make run.
func TestServeDefaultsAreTheFlagDefaults(t *testing.T) {
	c, err := serveDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ActivatorMaxHeld != 1000 || c.ActivatorHoldTimeout != 120*time.Second || c.ProxyLogBatchSize != 5000 ||
		c.ShutdownGrace != 20*time.Second || !c.Controller || c.XDSListen != "127.0.0.1:18000" {
		t.Fatalf("serve defaults: %+v", c)
	}
}
