// Package store keeps pod samples and mirrored scaling rules in Redis, and
// tells the controller's replicas which pods sent samples.
//
// Keys:
//
//	podmetric:{namespace/pod}      sorted set of JSON samples, score = Unix time in seconds
//	scaling_rule:{ns/name/rule}    JSON of one rule of a CustomAutoscaler
//	scaling_rules:{ns/name}        set of the rule ids mirrored for one CustomAutoscaler
//	channel podmetric:updates      newline-separated pod ids of each stored batch
package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
)

// UpdatesChannel is the Redis pub/sub channel announcing stored samples.
const UpdatesChannel = "podmetric:updates"

// Store is the Redis side of the controller.
type Store struct {
	rdb *redis.Client
	// retention is how long samples are kept, and how long the key of a pod
	// that stopped pushing lives on.
	retention time.Duration
}

// New returns a store keeping samples for retention, which must cover the
// longest rule window (3600 s in the API).
func New(rdb *redis.Client, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention}
}

func sampleKey(id string) string { return "podmetric:" + id }

func score(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Append stores samples in one pipeline: each pod's samples, the trimming of
// its samples older than the retention, its key's expiry, and one message
// on UpdatesChannel naming the pods.
func (s *Store) Append(ctx context.Context, samples []podmetric.Sample) error {
	byPod := map[string][]redis.Z{}
	var order []string
	for _, sample := range samples {
		member, err := json.Marshal(sample)
		if err != nil {
			return fmt.Errorf("encoding sample of %s: %w", sample.ID, err)
		}
		if _, ok := byPod[sample.ID]; !ok {
			order = append(order, sample.ID)
		}
		byPod[sample.ID] = append(byPod[sample.ID], redis.Z{Score: score(sample.ReceivedAt), Member: member})
	}
	cutoff := strconv.FormatFloat(score(time.Now().Add(-s.retention)), 'f', -1, 64)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range order {
			key := sampleKey(id)
			p.ZAdd(ctx, key, byPod[id]...)
			p.ZRemRangeByScore(ctx, key, "-inf", "("+cutoff)
			p.Expire(ctx, key, s.retention)
		}
		p.Publish(ctx, UpdatesChannel, strings.Join(order, "\n"))
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing %d samples: %w", len(samples), err)
	}
	return nil
}

// Samples returns the samples of each pod taken after since, in one
// pipeline; every pod asked for is a key of the result.
func (s *Store) Samples(ctx context.Context, pods []string, since time.Time) (map[string][]podmetric.Sample, error) {
	out := make(map[string][]podmetric.Sample, len(pods))
	if len(pods) == 0 {
		return out, nil
	}
	min := "(" + strconv.FormatFloat(score(since), 'f', -1, 64)
	cmds := make([]*redis.StringSliceCmd, len(pods))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range pods {
			cmds[i] = p.ZRangeByScore(ctx, sampleKey(id), &redis.ZRangeBy{Min: min, Max: "+inf"})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading samples of %d pods: %w", len(pods), err)
	}
	for i, id := range pods {
		members := cmds[i].Val()
		samples := make([]podmetric.Sample, 0, len(members))
		for _, m := range members {
			var sample podmetric.Sample
			if err := json.Unmarshal([]byte(m), &sample); err != nil {
				return nil, fmt.Errorf("decoding a sample of %s: %w", id, err)
			}
			samples = append(samples, sample)
		}
		out[id] = samples
	}
	return out, nil
}

// Updates subscribes to UpdatesChannel and returns the pod ids of each
// stored batch until ctx ends. The subscription reconnects by itself after
// Redis comes back; batches stored meanwhile are not announced.
func (s *Store) Updates(ctx context.Context) <-chan []string {
	sub := s.rdb.Subscribe(ctx, UpdatesChannel)
	out := make(chan []string)
	go func() {
		defer close(out)
		defer func() { _ = sub.Close() }()
		msgs := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- strings.Split(m.Payload, "\n"):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func rulePrefix(namespace, name string) string { return "scaling_rule:" + namespace + "/" + name + "/" }

func ruleIndex(namespace, name string) string { return "scaling_rules:" + namespace + "/" + name }

// RuleKey is the key of one mirrored rule.
func RuleKey(namespace, name, rule string) string { return rulePrefix(namespace, name) + rule }

// syncRules replaces an autoscaler's mirrored rules atomically: it deletes
// the keys of the ids in the index, then writes the new rules and index.
// KEYS[1] is the index; ARGV[1] the key prefix, then pairs of id and JSON.
var syncRules = redis.NewScript(`
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('SET', ARGV[1] .. ARGV[i], ARGV[i + 1])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 0
`)

// MirroredRule is what scaling_rule:{id} holds: the rule with its owner and
// the autoscaler's bounds, so a reader needs nothing else.
type MirroredRule struct {
	// ID is namespace/autoscaler/rule, unique in the cluster.
	ID            string               `json:"id"`
	Namespace     string               `json:"namespace"`
	Autoscaler    string               `json:"autoscaler"`
	Rule          string               `json:"rule"`
	Action        v1alpha1.Action      `json:"action"`
	Thresholds    []v1alpha1.Threshold `json:"thresholds"`
	WindowSeconds int32                `json:"windowSeconds"`
	MinReplicas   int32                `json:"minReplicas"`
	MaxReplicas   int32                `json:"maxReplicas"`
}

// SaveRules mirrors the autoscaler's rules, replacing those it had.
func (s *Store) SaveRules(ctx context.Context, ca *v1alpha1.CustomAutoscaler) error {
	args := []any{rulePrefix(ca.Namespace, ca.Name)}
	for _, r := range ca.Spec.Rules {
		data, err := json.Marshal(MirroredRule{
			ID: ca.Namespace + "/" + ca.Name + "/" + r.ID, Namespace: ca.Namespace, Autoscaler: ca.Name,
			Rule: r.ID, Action: r.Action, Thresholds: r.Thresholds, WindowSeconds: r.WindowSeconds,
			MinReplicas: ca.Spec.MinReplicas, MaxReplicas: ca.Spec.MaxReplicas,
		})
		if err != nil {
			return fmt.Errorf("encoding rule %s: %w", r.ID, err)
		}
		args = append(args, r.ID, data)
	}
	if err := syncRules.Run(ctx, s.rdb, []string{ruleIndex(ca.Namespace, ca.Name)}, args...).Err(); err != nil && err != redis.Nil {
		return fmt.Errorf("mirroring rules of %s/%s: %w", ca.Namespace, ca.Name, err)
	}
	return nil
}

// DeleteRules removes the autoscaler's mirrored rules.
func (s *Store) DeleteRules(ctx context.Context, namespace, name string) error {
	err := syncRules.Run(ctx, s.rdb, []string{ruleIndex(namespace, name)}, rulePrefix(namespace, name)).Err()
	if err != nil && err != redis.Nil {
		return fmt.Errorf("deleting rules of %s/%s: %w", namespace, name, err)
	}
	return nil
}
