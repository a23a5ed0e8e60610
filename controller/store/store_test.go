package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/controller/store"
	"github.com/nemesis-ml/nemesis/internal/testing/fixture"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// redisStore starts Redis for the test and returns a store keeping samples
// for retention, and a client to look at the keys.
func redisStore(t *testing.T, retention time.Duration) (*store.Store, *redis.Client) {
	t.Helper()
	rdb := testenv.RedisClient(t, testenv.Redis(t))
	return store.New(rdb, retention), rdb
}

func TestAppendedSamplesAreReadBackAfterSince(t *testing.T) {
	s, _ := redisStore(t, time.Hour)
	ctx := testenv.Context(t, 30*time.Second)
	// UTC without a monotonic reading, as samples read back from JSON are.
	now := time.Now().UTC().Truncate(time.Millisecond)
	batch := []podmetric.Sample{
		{ID: "ml/a-0", ReceivedAt: now.Add(-3 * time.Second), RequestRate: 1},
		{ID: "ml/b-0", ReceivedAt: now.Add(-2 * time.Second), RequestRate: 2},
		{ID: "ml/a-0", ReceivedAt: now.Add(-1 * time.Second), RequestRate: 3},
		{ID: "ml/a-0", ReceivedAt: now.Add(-2 * time.Second), RequestRate: 4},
	}
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.Samples(ctx, []string{"ml/a-0", "ml/b-0", "ml/c-0"}, now.Add(-3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Later than since only, oldest first, and every pod asked is a key.
	want := map[string][]podmetric.Sample{
		"ml/a-0": {batch[3], batch[2]},
		"ml/b-0": {batch[1]},
		"ml/c-0": {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Samples =\n  %+v\nwant\n  %+v", got, want)
	}
	if got, err := s.Samples(ctx, nil, now); err != nil || len(got) != 0 {
		t.Errorf("Samples of no pods = %v, %v; want nothing", got, err)
	}
}

func TestAppendTrimsOldSamplesAndSetsTheExpiry(t *testing.T) {
	const retention = time.Minute
	s, rdb := redisStore(t, retention)
	ctx := testenv.Context(t, 30*time.Second)
	now := time.Now()
	old := podmetric.Sample{ID: "ml/a-0", ReceivedAt: now.Add(-2 * retention), RequestRate: 1}
	fresh := podmetric.Sample{ID: "ml/a-0", ReceivedAt: now.Add(-time.Second), RequestRate: 2}
	if err := s.Append(ctx, []podmetric.Sample{old, fresh}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, "podmetric:ml/a-0").Val(); n != 1 {
		t.Errorf("podmetric:ml/a-0 holds %d samples, want the fresh one only", n)
	}
	ttl := rdb.TTL(ctx, "podmetric:ml/a-0").Val()
	if ttl <= 0 || ttl > retention {
		t.Errorf("podmetric:ml/a-0 expires in %s, want within the retention (%s)", ttl, retention)
	}
	// Each append renews the expiry of a pod that keeps pushing.
	rdb.Expire(ctx, "podmetric:ml/a-0", time.Second)
	if err := s.Append(ctx, []podmetric.Sample{{ID: "ml/a-0", ReceivedAt: now, RequestRate: 3}}); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.TTL(ctx, "podmetric:ml/a-0").Val(); ttl <= time.Second {
		t.Errorf("after another append the key expires in %s, want the retention again", ttl)
	}
}

func TestUpdatesAnnounceEachBatchsPods(t *testing.T) {
	s, rdb := redisStore(t, time.Hour)
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	updates := s.Updates(ctx)
	// Publishing before the subscription is in place would be lost.
	testenv.Eventually(t, 10*time.Second, "the subscription", func() error {
		if n := rdb.PubSubNumSub(ctx, store.UpdatesChannel).Val()[store.UpdatesChannel]; n != 1 {
			return fmt.Errorf("%d subscribers", n)
		}
		return nil
	})
	now := time.Now()
	batch := []podmetric.Sample{
		{ID: "ml/b-0", ReceivedAt: now, RequestRate: 1},
		{ID: "ml/a-0", ReceivedAt: now, RequestRate: 1},
		{ID: "ml/b-0", ReceivedAt: now, RequestRate: 2},
	}
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	select {
	case pods := <-updates:
		if !slices.Equal(pods, []string{"ml/b-0", "ml/a-0"}) {
			t.Errorf("announced %q, want each pod once in the batch's order", pods)
		}
	case <-ctx.Done():
		t.Fatal("no announcement")
	}
	cancel()
	for range updates {
	}
}

func TestSaveRulesMirrorsAndReplacesAnAutoscalersRules(t *testing.T) {
	s, rdb := redisStore(t, time.Hour)
	ctx := testenv.Context(t, 30*time.Second)
	hot := v1alpha1.ScalingRule{ID: "hot", Action: v1alpha1.ActionIncreaseInstances, WindowSeconds: 30,
		Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricCPUUsage, Operator: v1alpha1.OperatorGreaterThan, Value: 800}}}
	idle := v1alpha1.ScalingRule{ID: "idle", Action: v1alpha1.ActionDecreaseInstancesToZero, WindowSeconds: 60,
		Thresholds: []v1alpha1.Threshold{{MetricType: v1alpha1.MetricRequestRate, Operator: v1alpha1.OperatorEqualTo, Value: 0}}}
	resnet := fixture.NewCustomAutoscaler("ml/resnet").WithReplicas(0, 4)
	bert := fixture.NewCustomAutoscaler("ml/bert").WithRule(hot)

	for _, ca := range []fixture.CustomAutoscaler{resnet.WithRule(hot).WithRule(idle), bert} {
		if err := s.SaveRules(ctx, &ca.CustomAutoscaler); err != nil {
			t.Fatal(err)
		}
	}
	var got store.MirroredRule
	if err := json.Unmarshal([]byte(rdb.Get(ctx, store.RuleKey("ml", "resnet", "idle")).Val()), &got); err != nil {
		t.Fatal(err)
	}
	want := store.MirroredRule{ID: "ml/resnet/idle", Namespace: "ml", Autoscaler: "resnet", Rule: "idle",
		Action: idle.Action, Thresholds: idle.Thresholds, WindowSeconds: 60, MinReplicas: 0, MaxReplicas: 4}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mirrored rule =\n  %+v\nwant\n  %+v", got, want)
	}
	assertRules(t, rdb, "ml/resnet", "hot", "idle")

	// A rule removed from the autoscaler goes from Redis; the other
	// autoscaler's rules stay.
	onlyIdle := resnet.WithRule(idle)
	if err := s.SaveRules(ctx, &onlyIdle.CustomAutoscaler); err != nil {
		t.Fatal(err)
	}
	assertRules(t, rdb, "ml/resnet", "idle")
	assertRules(t, rdb, "ml/bert", "hot")

	// No rules left, or the autoscaler deleted: nothing stays behind.
	if err := s.SaveRules(ctx, &resnet.CustomAutoscaler); err != nil {
		t.Fatal(err)
	}
	assertRules(t, rdb, "ml/resnet")
	if err := s.DeleteRules(ctx, "ml", "bert"); err != nil {
		t.Fatal(err)
	}
	assertRules(t, rdb, "ml/bert")
	if keys := rdb.Keys(ctx, "scaling_rule*").Val(); len(keys) != 0 {
		t.Errorf("keys left after every rule went: %q", keys)
	}
	// Deleting what is not there is not an error.
	if err := s.DeleteRules(ctx, "ml", "never"); err != nil {
		t.Errorf("DeleteRules of an autoscaler without rules: %v", err)
	}
}

// assertRules checks that exactly the rules ids of the autoscaler ns/name
// are mirrored: in its index and as keys.
func assertRules(t *testing.T, rdb *redis.Client, autoscaler string, ids ...string) {
	t.Helper()
	ctx := t.Context()
	index := rdb.SMembers(ctx, "scaling_rules:"+autoscaler).Val()
	slices.Sort(index)
	keys := rdb.Keys(ctx, "scaling_rule:"+autoscaler+"/*").Val()
	slices.Sort(keys)
	var wantKeys []string
	for _, id := range ids {
		wantKeys = append(wantKeys, "scaling_rule:"+autoscaler+"/"+id)
	}
	if !slices.Equal(index, ids) || !slices.Equal(keys, wantKeys) {
		t.Errorf("%s mirrors index %q and keys %q, want rules %q", autoscaler, index, keys, ids)
	}
}
