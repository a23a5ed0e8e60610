// Command screenshots logs in to a running console (make run) with a read
// token and saves PNGs of its pages, for the README and docs/console.md:
//
//	go run ./hack/screenshots --token <read token> --out docs/images
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"
)

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "serve's HTTP address")
	token := flag.String("token", "", "a token with the read scope (make run prints it)")
	out := flag.String("out", "docs/images", "folder of the PNGs")
	autoscaler := flag.String("autoscaler", "demo/digits", "namespace/name of the autoscaler page")
	flag.Parse()
	if *token == "" {
		log.Fatal("--token is required")
	}
	if err := run(*base, *token, *out, *autoscaler); err != nil {
		log.Fatal(err)
	}
}

func run(base, token, out, autoscaler string) error {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		return fmt.Errorf("chromium not found (make tools installs it): %w", err)
	}
	profile, err := os.MkdirTemp("", "nemesis-screenshots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(profile))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelTimeout()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/ui/login"),
		chromedp.SendKeys(`input[name="token"]`, token),
		chromedp.Submit(`form.login`),
		chromedp.WaitVisible(`#fleet`),
	); err != nil {
		return fmt.Errorf("logging in: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, p := range []struct{ file, path string }{
		{"console-fleet.png", "/ui/"},
		{"console-autoscaler.png", "/ui/autoscalers/" + autoscaler},
		{"console-report.png", "/ui/reports?period=day"},
	} {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(base+p.path),
			chromedp.WaitReady("body"),
			// The charts draw after the page's data arrives.
			chromedp.Sleep(2*time.Second),
		); err != nil {
			return fmt.Errorf("%s: %w", p.path, err)
		}
		// The first screenful, as PNG: what a reader sees first, small.
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			return fmt.Errorf("%s: %w", p.path, err)
		}
		if err := os.WriteFile(filepath.Join(out, p.file), png, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %s (%d KiB)\n", p.path, filepath.Join(out, p.file), len(png)>>10)
	}
	return nil
}
