package reconciler_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/controller/ingest"
	"github.com/nemesis-ml/nemesis/controller/rules"
	"github.com/nemesis-ml/nemesis/controller/store"
)

var (
	cpuHigh = rule{"cpu-high", v1alpha1.ActionIncreaseInstances, v1alpha1.MetricCPUUsage, v1alpha1.OperatorGreaterThan, 700}
	cpuLow  = rule{"cpu-low", v1alpha1.ActionDecreaseInstances, v1alpha1.MetricCPUUsage, v1alpha1.OperatorLessThan, 200}
	idle    = rule{"idle", v1alpha1.ActionDecreaseInstancesToZero, v1alpha1.MetricRequestRate, v1alpha1.OperatorEqualTo, 0}
)

func TestScalesUpStepByStepToMaxThenDownNoFasterThanTheWindow(t *testing.T) {
	h := newHarness(t, 1, 3)
	h.autoscaler(1, 4, 0, 2, cpuHigh, cpuLow)
	history := h.track()
	h.start()

	stop := h.pushing(900, 5)
	h.eventually(20*time.Second, "replicas reach maxReplicas 4", func() bool { return h.replicas() == 4 })
	h.steady(time.Second, 4, "maxReplicas is 4 however high the CPU")
	stop()
	if got := counts(history()); !slices.Equal(got, []int32{1, 2, 3, 4}) {
		t.Fatalf("replicas went %v, want one step at a time 1 2 3 4", got)
	}
	ca := h.get()
	if d := ca.Status.LastDecision; d == nil || d.Rule != "cpu-high" || d.Values["CPU_USAGE"] != 900 {
		t.Fatalf("lastDecision = %+v", d)
	}
	checkScaleUpRecords(t, h.decisions.all())

	stop = h.pushing(100, 5)
	defer stop()
	h.eventually(30*time.Second, "replicas come down to minReplicas 1", func() bool {
		seen := history()
		return seen[len(seen)-1].replicas == 1
	})
	down := history()[3:]
	if got := counts(down); !slices.Equal(got, []int32{4, 3, 2, 1}) {
		t.Fatalf("replicas went %v on the way down, want 4 3 2 1", got)
	}
	for i := 2; i < len(down); i++ {
		if gap := down[i].at.Sub(down[i-1].at); gap < 1900*time.Millisecond {
			t.Errorf("scaled down %d → %d %s after the previous step, inside the 2s stabilization window", down[i-1].replicas, down[i].replicas, gap)
		}
	}
	if c := h.condition("Ready"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v", c)
	}
	var downs []string
	stabilized := false
	for _, r := range h.decisions.all() {
		if r.Action == "DECREASE_INSTANCES" && r.To < r.From {
			downs = append(downs, fmt.Sprintf("%d→%d", r.From, r.To))
		}
		stabilized = stabilized || (r.Rule == "cpu-low" && r.To == r.From && r.LimitedBy == rules.LimitStabilization)
	}
	if fmt.Sprint(downs) != "[4→3 3→2 2→1]" {
		t.Errorf("scale-down records %v, want [4→3 3→2 2→1]", downs)
	}
	if !stabilized {
		t.Error("no record of a decrease held by the stabilization window")
	}
	if ca := h.get(); ca.Status.ObservedGeneration != ca.Generation {
		t.Errorf("observedGeneration %d, generation %d", ca.Status.ObservedGeneration, ca.Generation)
	}
}

func TestAlternatingSamplesDoNotFlap(t *testing.T) {
	h := newHarness(t, 2, 2)
	h.autoscaler(1, 10, 0, 4, cpuHigh, cpuLow)
	history := h.track()
	h.start()
	for range 6 {
		stop := h.pushing(900, 5)
		time.Sleep(600 * time.Millisecond)
		stop()
		stop = h.pushing(100, 5)
		time.Sleep(600 * time.Millisecond)
		stop()
	}
	got := counts(history())
	if len(got) < 2 {
		t.Fatalf("replicas went %v: the high phases should have scaled up", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("replicas went %v: came down inside the 4s scale-down window", got)
		}
	}
}

func TestScalesToZeroOnlyAfterTheIdlePeriod(t *testing.T) {
	h := newHarness(t, 1, 1)
	h.autoscaler(0, 3, 0, 0, cpuHigh, idle)
	history := h.track()
	h.start()
	began := time.Now()
	stop := h.pushing(300, 0)
	defer stop()
	var last change
	h.eventually(20*time.Second, "idle target scales to zero", func() bool {
		seen := history()
		last = seen[len(seen)-1]
		return last.replicas == 0
	})
	if idleFor := last.at.Sub(began); idleFor < 3*time.Second {
		t.Fatalf("scaled to zero after %s idle, before the 3s idle period", idleFor)
	}
	h.eventually(10*time.Second, "a Scaled event for the idle rule", func() bool {
		return h.hasEvent("Scaled", "DECREASE_INSTANCES_TO_ZERO 1 → 0: rule idle")
	})
	if c := h.condition("Ready"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("at zero Ready = %+v, want true: resting at zero is healthy", c)
	}
}

func TestMissingSamplesNeverScaleToZero(t *testing.T) {
	h := newHarness(t, 1, 2)
	h.autoscaler(0, 3, 0, 0, cpuHigh, idle)
	h.start()
	stop := h.pushing(300, 0)
	h.eventually(10*time.Second, "the idle period starts", func() bool { return h.get().Status.IdleSince != nil })
	stop()
	// The sidecars stop pushing and their samples are gone.
	rdb := h.redisClient()
	for _, id := range h.pods {
		if err := rdb.Del(t.Context(), "podmetric:"+id).Err(); err != nil {
			t.Fatal(err)
		}
	}
	h.eventually(10*time.Second, "MetricsAvailable turns false", func() bool {
		c := h.condition("MetricsAvailable")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "MissingSamples"
	})
	h.steady(4*time.Second, 1, "the 3s idle period passed without samples")
	if ca := h.get(); ca.Status.IdleSince != nil {
		t.Errorf("idleSince %v kept across missing samples", ca.Status.IdleSince)
	}

	// One pod pushing idle samples while the other stays quiet is not idle
	// either: the quiet pod may be the busy one.
	one := h.pods[:1]
	all := h.pods
	h.pods = one
	stop = h.pushing(300, 0)
	defer stop()
	h.pods = all
	h.steady(4*time.Second, 1, "one of two pods reported")
}

func TestRedisDownHoldsReplicasAndScalingResumesWhenItIsBack(t *testing.T) {
	h := newHarness(t, 1, 2)
	h.autoscaler(1, 5, 0, 60, cpuHigh, cpuLow)
	h.start()
	h.waitObserved()
	h.push(900, 5)
	h.eventually(10*time.Second, "first step up", func() bool { return h.replicas() == 2 })

	if err := h.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "conditions say Redis is down", func() bool {
		c := h.condition("MetricsAvailable")
		r := h.condition("Ready")
		return c != nil && c.Reason == "RedisUnavailable" && r != nil && r.Status == metav1.ConditionFalse
	})
	h.steady(2*time.Second, 2, "Redis is down")

	if err := h.redis.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop := h.pushing(900, 5)
	defer stop()
	h.eventually(20*time.Second, "scaling resumes after Redis is back", func() bool { return h.replicas() >= 3 })
	h.eventually(10*time.Second, "MetricsAvailable true again", func() bool {
		c := h.condition("MetricsAvailable")
		return c != nil && c.Status == metav1.ConditionTrue
	})
}

func TestControllerRestartMakesNoDuplicateOrLostStep(t *testing.T) {
	h := newHarness(t, 1, 2)
	h.autoscaler(1, 6, 0, 60, cpuHigh, cpuLow)
	history := h.track()
	stop := h.start()
	h.waitObserved()
	h.push(900, 5)
	h.eventually(10*time.Second, "first step up", func() bool { return h.replicas() == 2 })
	stop()

	// A new controller sees the same samples; they were counted already.
	stop = h.start()
	h.steady(2*time.Second, 2, "no sample arrived since the last step")
	h.push(900, 5)
	h.eventually(10*time.Second, "a fresh sample makes the next step", func() bool { return h.replicas() == 3 })
	stop()

	// A controller died after recording 3 → 4 and before scaling: the next
	// one completes that step, once.
	scale := &autoscalingv1.Scale{}
	if err := h.c.SubResource("scale").Get(t.Context(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "model"}}, scale); err != nil {
		t.Fatal(err)
	}
	ca := h.get()
	ca.Status.LastDecision = &v1alpha1.Decision{
		Time: metav1.Now(), Rule: "cpu-high", Action: "INCREASE_INSTANCES",
		FromReplicas: 3, ToReplicas: 4, Reason: "interrupted", TargetResourceVersion: scale.ResourceVersion,
	}
	ca.Status.DesiredReplicas = 4
	ca.Status.LastScaleTime = &metav1.MicroTime{Time: time.Now()}
	if err := h.c.Status().Update(t.Context(), ca); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.eventually(10*time.Second, "the interrupted step is completed", func() bool { return h.replicas() == 4 })
	h.steady(2*time.Second, 4, "the interrupted step is made once")
	if got := counts(history()); !slices.Equal(got, []int32{1, 2, 3, 4}) {
		t.Fatalf("replicas went %v, want 1 2 3 4", got)
	}
}

func TestDryRunRecordsDecisionsWithoutScaling(t *testing.T) {
	h := newHarness(t, 1, 1)
	ca := h.autoscaler(1, 4, 0, 0, cpuHigh)
	ca.Spec.DryRun = true
	if err := h.c.Update(t.Context(), ca); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitObserved()
	h.push(900, 5)
	h.eventually(10*time.Second, "a dry-run decision is recorded", func() bool {
		d := h.get().Status.LastDecision
		return d != nil && d.DryRun && d.Action == "INCREASE_INSTANCES" && d.FromReplicas == 1 && d.ToReplicas == 2
	})
	h.steady(time.Second, 1, "dry run")
	if c := h.condition("AbleToScale"); c == nil || c.Reason != "DryRun" {
		t.Errorf("AbleToScale = %+v", c)
	}
	h.eventually(10*time.Second, "a DryRun event", func() bool { return h.hasEvent("DryRun", "would scale 1 → 2") })
	var dry []decisions.Record
	for _, r := range h.decisions.all() {
		if r.LimitedBy == decisions.LimitDryRun {
			dry = append(dry, r)
		}
	}
	if len(dry) != 1 || !dry[0].DryRun || dry[0].From != 1 || dry[0].To != 2 {
		t.Errorf("dry-run records %+v, want one 1 → 2 (repeats of the same decision are not recorded again)", dry)
	}
}

// checkScaleUpRecords checks the record of 1 → 4 on CPU 900 > 700 from
// three pods (every rule's thresholds are inputs), then held at maxReplicas.
func checkScaleUpRecords(t *testing.T, records []decisions.Record) {
	t.Helper()
	var ups []string
	atMax := 0
	for _, r := range records {
		switch {
		case r.To > r.From:
			ups = append(ups, fmt.Sprintf("%d→%d", r.From, r.To))
			if len(r.Inputs) != 2 || r.Inputs[0].Rule != "cpu-high" || r.Inputs[1].Rule != "cpu-low" {
				t.Fatalf("inputs %+v, want cpu-high's threshold then cpu-low's", r.Inputs)
			}
			in := r.Inputs[0]
			if r.Rule != "cpu-high" || in.Value == nil || *in.Value != 900 || in.Threshold != 700 || in.WindowSeconds != 1 ||
				in.ReadyPods != 3 || in.ReportingPods != 3 || in.Samples < 3 || in.NewestSampleAgeSeconds == nil || *in.NewestSampleAgeSeconds > 1 {
				t.Errorf("scale-up record %+v, inputs %+v", r, in)
			}
		case r.LimitedBy == rules.LimitMaxReplicas:
			atMax++
		}
	}
	if fmt.Sprint(ups) != "[1→2 2→3 3→4]" {
		t.Errorf("scale-up records %v, want [1→2 2→3 3→4]", ups)
	}
	if atMax != 1 {
		t.Errorf("%d records of the hold at maxReplicas, want one however many evaluations saw it", atMax)
	}
}

func TestRulesAreMirroredToRedisAndDeletedWithTheObject(t *testing.T) {
	h := newHarness(t, 1, 1)
	h.autoscaler(1, 4, 0, 0, cpuHigh, cpuLow)
	h.start()
	rdb := h.redisClient()
	key := store.RuleKey(h.ns, "model", "cpu-high")
	h.eventually(10*time.Second, "rules mirrored", func() bool {
		return rdb.Exists(t.Context(), key, store.RuleKey(h.ns, "model", "cpu-low")).Val() == 2
	})
	// The controller writes the object too (finalizer, status): retry on
	// its newer versions as any client would.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ca := h.get()
		ca.Spec.Rules = ca.Spec.Rules[:1]
		return h.c.Update(t.Context(), ca)
	})
	if err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "a removed rule's key is deleted", func() bool {
		return rdb.Exists(t.Context(), store.RuleKey(h.ns, "model", "cpu-low")).Val() == 0
	})
	if err := h.c.Delete(t.Context(), h.get()); err != nil {
		t.Fatal(err)
	}
	h.eventually(10*time.Second, "rules deleted with the object", func() bool {
		return rdb.Exists(t.Context(), key).Val() == 0 && h.gone()
	})
}

func TestMissingTargetIsReportedNotFatal(t *testing.T) {
	h := newHarness(t, 1, 1)
	ca := h.autoscaler(1, 4, 0, 0, cpuHigh)
	ca.Spec.ScaleTargetRef.Name = "nothing"
	if err := h.c.Update(t.Context(), ca); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.eventually(10*time.Second, "AbleToScale false", func() bool {
		c := h.condition("AbleToScale")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "FailedGetScale"
	})
}

func (h *harness) hasEvent(reason, note string) bool {
	events := &corev1.EventList{}
	if err := h.c.List(h.t.Context(), events); err != nil {
		h.t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Namespace == h.ns && e.Reason == reason && strings.Contains(e.Message, note) {
			return true
		}
	}
	return false
}

func (h *harness) gone() bool {
	err := h.c.Get(h.t.Context(), client.ObjectKey{Namespace: h.ns, Name: "model"}, &v1alpha1.CustomAutoscaler{})
	return apierrors.IsNotFound(err)
}

func TestHeldRequestsBlockScaleToZeroAndWakeTheTarget(t *testing.T) {
	h := newHarness(t, 1, 1)
	h.autoscaler(0, 3, 0, 0, cpuHigh, idle)
	h.start()
	stopPushing := h.pushing(300, 0)
	defer stopPushing()
	stamper := activation.New(h.c)
	stamp := func() {
		if err := stamper.Stamp(t.Context(), h.ns, "model", time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	// The activator renews its stamp while it holds requests: idle samples
	// or not, the target is busy.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			stamp()
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	h.steady(5*time.Second, 1, "requests are held past the 3s idle period")
	close(stop)
	<-done

	// Without stamps the lease runs out, then the idle period.
	h.eventually(v1alpha1.ActivationLease+15*time.Second, "scaled to zero after the lease", func() bool { return h.replicas() == 0 })

	woken := time.Now()
	stamp()
	h.eventually(10*time.Second, "woken by the activation", func() bool { return h.replicas() == 1 })
	h.eventually(10*time.Second, "a Scaled event for the activation", func() bool {
		return h.hasEvent("Scaled", "INCREASE_INSTANCES 0 → 1: activation")
	})
	h.eventually(10*time.Second, "the scale recorded in the status", func() bool { return scaledSince(h.get(), woken) })
}

// A wake noted by the activator of the controller's own process scales the
// target without the annotation, and is recorded like a stamped one.
func TestLocalActivationWakesWithoutTheAnnotation(t *testing.T) {
	h := newHarness(t, 0, 0)
	h.autoscaler(0, 3, 0, 0, idle)
	h.start()
	h.waitObserved()
	h.steady(time.Second, 0, "nothing asks for the model")

	woken := time.Now()
	h.activations.Note(h.ns, "model", woken)
	h.eventually(10*time.Second, "woken by the local activation", func() bool { return h.replicas() == 1 })
	h.eventually(10*time.Second, "a Scaled event for the activation", func() bool {
		return h.hasEvent("Scaled", "INCREASE_INSTANCES 0 → 1: activation")
	})
	h.eventually(10*time.Second, "the scale recorded in the status", func() bool { return scaledSince(h.get(), woken) })
	var wakes []decisions.Record
	for _, r := range h.decisions.all() {
		if r.Wake != nil {
			wakes = append(wakes, r)
		}
	}
	if len(wakes) != 1 || wakes[0].From != 0 || wakes[0].To != 1 || wakes[0].Rule != v1alpha1.ActivationRule {
		t.Fatalf("wake records %+v, want one 0 → 1 by the activation rule", wakes)
	}
	if w := wakes[0].Wake; !w.RequestHeld.Equal(woken) || w.Decided.Before(w.RequestHeld) || w.ScaleWritten.Before(w.Decided) {
		t.Errorf("wake stages %+v out of order (held at %s)", w, woken)
	}
	if ca := h.get(); ca.Annotations[v1alpha1.AnnotationActivation] != "" {
		t.Errorf("annotation %q: the local wake needs none", ca.Annotations[v1alpha1.AnnotationActivation])
	}

	// The pod the wake makes (by hand: no deployment controller here) is
	// recorded when the watch sees it created, then ready.
	pod := h.addPod("model-woken", false)
	h.eventually(10*time.Second, "the pod's creation recorded", func() bool { return len(h.decisions.podStages()) == 1 })
	h.setReady(pod)
	h.eventually(10*time.Second, "the pod's readiness recorded", func() bool { return len(h.decisions.podStages()) == 2 })
	created, ready := h.decisions.podStages()[0], h.decisions.podStages()[1]
	w := wakes[0].Wake
	for _, p := range []decisions.PodStages{created, ready} {
		if p.Namespace != h.ns || p.Name != "model" || p.Pod != "model-woken" || !p.Decided.Equal(wakes[0].Time) {
			t.Errorf("pod stages %+v name another wake or pod (decided %s)", p, wakes[0].Time)
		}
	}
	if created.Created.Before(w.ScaleWritten) || !created.Ready.IsZero() || !ready.Created.Equal(created.Created) || ready.Ready.Before(ready.Created) {
		t.Errorf("pod stages out of order: scale written %s, created %+v, ready %+v", w.ScaleWritten, created, ready)
	}
}

// scaledSince says whether the status records a scale at or after t: the
// wake is recorded after it scaled, and later holds replace its decision
// but not its time.
func scaledSince(ca *v1alpha1.CustomAutoscaler, t time.Time) bool {
	return ca.Status.LastScaleTime != nil && !ca.Status.LastScaleTime.Time.Before(t)
}

func TestSamplesAtTheRangeLimitsFromManyPodsKeepDecidingAndStatusWritten(t *testing.T) {
	h := newHarness(t, 1, 20)
	h.autoscaler(1, 3, 0, 2, cpuHigh, cpuLow)
	h.start()
	// The largest CPU ingest accepts, from twenty pods every 100 ms: means
	// stay finite however many samples the window holds.
	stop := h.pushing(ingest.MaxCPUMillicores, ingest.MaxRequestRate)
	h.eventually(20*time.Second, "replicas reach maxReplicas 3", func() bool { return h.replicas() == 3 })
	h.eventually(10*time.Second, "the status records the samples' values at maxReplicas", func() bool {
		st := h.get().Status
		return st.DesiredReplicas == 3 && st.LastDecision != nil && st.LastDecision.Values["CPU_USAGE"] == ingest.MaxCPUMillicores
	})
	stop()
	stop = h.pushing(100, 5)
	defer stop()
	h.eventually(30*time.Second, "replicas come down after the huge samples", func() bool { return h.replicas() < 3 })
}
