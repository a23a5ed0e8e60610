package tests

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// TestSidecarSamplesReachRedisThroughServe runs `nemesis sidecar` in front
// of a model, pushing to a real `nemesis serve`: a sample per second lands
// in Redis under the pod's id, and with serve down for 10 s the samples
// taken meanwhile arrive once it is back, none missing.
func TestSidecarSamplesReachRedisThroughServe(t *testing.T) {
	s := newStack(t)
	rdb := testenv.RedisClient(t, s.redis)

	model := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"class":"cat"}`))
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = model.Serve(l) }()
	t.Cleanup(func() { _ = model.Close() })

	listen := fmt.Sprintf("127.0.0.1:%d", testenv.Port(t))
	testenv.Process(t, "nemesis-sidecar", exec.Command(nemesisBin, "sidecar", "--mode", "proxy",
		"--listen", listen, "--admin-listen", fmt.Sprintf("127.0.0.1:%d", testenv.Port(t)),
		"--model-url", "http://"+l.Addr().String(), "--pod-namespace", s.namespace, "--pod-name", "model-0",
		"--controller-url", s.apiURL, "--controller-token", metricsToken, "--push-interval", "1s",
		"--meter", "processes", "--meter-pid", strconv.Itoa(os.Getpid())))
	key := "podmetric:" + s.namespace + "/model-0"

	testenv.Eventually(t, 20*time.Second, "requests counted in a stored sample", func() error {
		if _, _, err := get(http.DefaultClient, "http://"+listen+"/predict"); err != nil {
			return err
		}
		n, err := rdb.ZCount(t.Context(), key, "-inf", "+inf").Result()
		if err != nil || n < 3 {
			return fmt.Errorf("%d samples, %v", n, err)
		}
		return nil
	})

	if err := s.serve.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(10 * time.Second)
	s.startServe()
	up := time.Now()

	testenv.Eventually(t, 20*time.Second, "samples of the outage stored", func() error {
		times := sampleTimes(t, rdb, key)
		if len(times) == 0 || times[len(times)-1].Before(up) {
			return fmt.Errorf("nothing stored after serve came back")
		}
		return nil
	})
	times := sampleTimes(t, rdb, key)
	during := 0
	for i, at := range times {
		if at.After(down) && at.Before(up) {
			during++
		}
		if i > 0 {
			if gap := at.Sub(times[i-1]); gap > 1500*time.Millisecond {
				t.Fatalf("samples %v and %v are %v apart: some were lost", times[i-1], at, gap)
			}
		}
	}
	if during < 9 {
		t.Fatalf("%d samples taken during the 10 s outage were stored, want about 10", during)
	}
}

// sampleTimes returns when each stored sample of key was taken, in order.
func sampleTimes(t *testing.T, rdb *redis.Client, key string) []time.Time {
	t.Helper()
	zs, err := rdb.ZRangeWithScores(t.Context(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]time.Time, 0, len(zs))
	for _, z := range zs {
		out = append(out, time.Unix(0, int64(z.Score*1e9)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}
