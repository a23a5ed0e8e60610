// Package reconciler is the CustomAutoscaler controller: it reads the
// target's scale and ready pods, aggregates the pods' samples from Redis,
// evaluates the rules and sets the target's scale subresource.
package reconciler

import (
	"context"
	"fmt"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/nemesis-ml/nemesis/controller/activation"
	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/podmetric"
	"github.com/nemesis-ml/nemesis/controller/rules"
	"github.com/nemesis-ml/nemesis/controller/store"
)

// Finalizer keeps a CustomAutoscaler until its mirrored rules are deleted
// from Redis.
const Finalizer = "autoscaler-group.autoscaler/mirrored-rules"

// conflictRetry is how soon a reconcile that lost a write race (usually to
// its own cache lagging behind its last write) runs again.
const conflictRetry = 50 * time.Millisecond

// +kubebuilder:rbac:groups=autoscaler-group.autoscaler,resources=customautoscalers,verbs=list;watch;update
// +kubebuilder:rbac:groups=autoscaler-group.autoscaler,resources=customautoscalers/status,verbs=update;patch
// +kubebuilder:rbac:groups=*,resources=*/scale,verbs=get;update
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler reconciles CustomAutoscalers.
type Reconciler struct {
	client   client.Client
	store    *store.Store
	recorder recorder.EventRecorder
	metrics  *metrics
	// resync is the longest time between two evaluations of an autoscaler;
	// samples usually trigger them sooner.
	resync time.Duration
	// retry is when to try again after Redis or the API server failed.
	retry time.Duration
	now   func() time.Time
	// activations are this process's activator's wakes; nil when none.
	activations *activation.Local
	// records is the decision record, wakePods the pods of its wakes.
	records  *recordLog
	wakePods *wakePods
}

// observation is what one reconcile saw of the target.
type observation struct {
	scale    *autoscalingv1.Scale
	selector labels.Selector
	// pods are the target's pods, ready or not; readyPods the ready ones'
	// namespace/name.
	pods      []corev1.Pod
	readyPods []string
	samples   map[string][]podmetric.Sample
}

func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	start := r.now()
	log := logf.FromContext(ctx)
	ca := &v1alpha1.CustomAutoscaler{}
	if err := r.client.Get(ctx, req.NamespacedName, ca); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ca.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, ca)
	}
	if controllerutil.AddFinalizer(ca, Finalizer) {
		if err := r.client.Update(ctx, ca); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	status := ca.Status.DeepCopy()
	status.ObservedGeneration = ca.Generation
	if err := r.routeAccepted(ctx, ca, status); err != nil {
		return ctrl.Result{}, err
	}
	obs, failed := r.observe(ctx, ca, status)
	if failed {
		return r.writeStatus(ctx, ca, status, ctrl.Result{RequeueAfter: r.retry})
	}
	if result, done, err := r.completeInterrupted(ctx, ca, status, obs.scale); done {
		return result, err
	}

	now := r.now()
	in := rules.Input{
		Now: now, Spec: ca.Spec, Current: obs.scale.Spec.Replicas,
		Aggregates: r.aggregate(ca, status, obs, now), Recommendations: status.Recommendations, IdleSince: status.IdleSince,
		Activation: r.activation(ca),
	}
	if status.LastScaleTime != nil {
		in.LastScaleTime = status.LastScaleTime.Time
	}
	d := rules.Evaluate(in)
	r.metrics.observe(ca, obs, in.Aggregates, d)
	status.Recommendations, status.IdleSince = d.Recommendations, d.IdleSince
	status.DesiredReplicas = d.To
	set(status, ca.Generation, CondScalingActive, d.To > 0 && len(d.Values) > 0, scalingActiveReason(d), d.Reason)
	setReady(status, ca.Generation, d.To == 0)
	result := ctrl.Result{RequeueAfter: r.resync}
	if d.RecheckAfter > 0 && d.RecheckAfter < r.resync {
		result.RequeueAfter = d.RecheckAfter
	}
	limit := limitOf(ca, d)
	if d.To == d.From {
		r.records.hold(ca, in, d, limit)
	}
	if !changed(status.LastDecision, d) {
		return r.writeStatus(ctx, ca, status, result)
	}
	status.LastDecision = &v1alpha1.Decision{
		Time: metav1.NewTime(now), Rule: d.Rule, Action: d.Action, Values: recordable(status, ca.Generation, d.Values),
		FromReplicas: d.From, ToReplicas: d.To, Reason: d.Reason, DryRun: ca.Spec.DryRun,
		TargetResourceVersion: obs.scale.ResourceVersion,
	}
	if d.To == d.From {
		return r.writeStatus(ctx, ca, status, result)
	}

	// The decision goes into the status before the scale changes: a
	// controller that dies in between finds it and completes it, and one
	// that dies after cannot count the same samples twice, because only
	// samples after lastScaleTime count.
	if !ca.Spec.DryRun {
		status.LastScaleTime = &metav1.MicroTime{Time: now}
		if d.Rule == v1alpha1.ActivationRule && d.From == 0 {
			return r.wake(ctx, ca, status, obs, in, d, start, result)
		}
	}
	if err := r.updateStatus(ctx, ca, status); err != nil {
		// Not scaling without the record: a stale cache or another writer
		// would otherwise let the same samples make a second step.
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		r.metrics.failed(ca, errUpdateStatus)
		return ctrl.Result{}, err
	}
	if ca.Spec.DryRun {
		r.records.hold(ca, in, d, limit)
		r.recorder.Eventf(ca, nil, corev1.EventTypeNormal, "DryRun", "Scale", "would scale %d → %d: %s", d.From, d.To, d.Reason)
		log.Info("dry run decision", "action", d.Action, "rule", d.Rule, "from", d.From, "to", d.To, "reason", d.Reason)
		return result, nil
	}
	if err := updateScale(ctx, r.client, ca, obs.scale, d.To); err != nil {
		return r.scaleFailed(ctx, ca, err)
	}
	// A pod this scale creates is not a wake's.
	r.wakePods.forget(client.ObjectKeyFromObject(ca))
	r.metrics.latency.Observe(r.now().Sub(start).Seconds())
	r.metrics.scaled(ca, d)
	r.records.applied(ca, in, d, limit, nil)
	r.announce(ctx, ca, d)
	return result, nil
}

// wake scales a target at zero up for the activator's held requests, and
// records the decision after: the clients wait on the scale, and this step
// needs no record first, as it can neither repeat (it sets at least one
// replica where there were none) nor count samples twice (a target at zero
// has none). The record is a patch so that a cache lagging behind the
// object cannot make it conflict; should it fail all the same, the scale
// is done and the log and the Scaled event still tell. The wake's pod is
// followed from before the scale, so that no pod it makes can slip by.
func (r *Reconciler) wake(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus, obs observation, in rules.Input, d rules.Decision, start time.Time, result ctrl.Result) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(ca)
	r.wakePods.expect(key, obs.selector, in.Now, obs.pods)
	if err := updateScale(ctx, r.client, ca, obs.scale, d.To); err != nil {
		r.wakePods.forget(key)
		return r.scaleFailed(ctx, ca, err)
	}
	written := r.now()
	r.metrics.latency.Observe(written.Sub(start).Seconds())
	r.metrics.scaled(ca, d)
	r.records.applied(ca, in, d, d.Limit, wakeStages(in, written))
	orig := ca.DeepCopy()
	ca.Status = *status
	err := r.client.Status().Patch(ctx, ca, client.MergeFrom(orig))
	// After the record: the event names the object's resourceVersion, and
	// the events library folds events naming the same one into one series,
	// which would hide this wake under the decision before it.
	r.announce(ctx, ca, d)
	if err != nil {
		r.metrics.failed(ca, errUpdateStatus)
		return ctrl.Result{}, fmt.Errorf("recording the activation: %w", err)
	}
	return result, nil
}

// announce tells a scale in an event and the log.
func (r *Reconciler) announce(ctx context.Context, ca *v1alpha1.CustomAutoscaler, d rules.Decision) {
	r.recorder.Eventf(ca, nil, corev1.EventTypeNormal, "Scaled", "Scale", "%s %d → %d: %s", d.Action, d.From, d.To, d.Reason)
	logf.FromContext(ctx).Info("scaled", "action", d.Action, "rule", d.Rule, "from", d.From, "to", d.To, "reason", d.Reason)
}

// observe reads the target's scale, its ready pods and their samples,
// setting AbleToScale and MetricsAvailable; failed means it could not see
// enough to decide and the replica count is held.
func (r *Reconciler) observe(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus) (observation, bool) {
	gen := ca.Generation
	var obs observation
	scale, err := getScale(ctx, r.client, ca)
	if err != nil {
		set(status, gen, CondAbleToScale, false, "FailedGetScale", err.Error())
		set(status, gen, CondScalingActive, false, "FailedGetScale", "holding: the target's scale cannot be read")
		setReady(status, gen, false)
		r.warnOnce(ca, CondAbleToScale, "FailedGetScale", err.Error())
		r.metrics.failed(ca, errGetScale)
		return obs, true
	}
	obs.scale = scale
	status.Replicas, status.Selector = scale.Spec.Replicas, scale.Status.Selector
	if ca.Spec.DryRun {
		set(status, gen, CondAbleToScale, true, "DryRun", "dry run: decisions are recorded, the target is not scaled")
	} else {
		set(status, gen, CondAbleToScale, true, "ReadyForNewScale", "the target's scale subresource answers")
	}

	selector, err := labels.Parse(scale.Status.Selector)
	if err != nil || scale.Status.Selector == "" {
		msg := fmt.Sprintf("the target's scale has no usable pod selector %q", scale.Status.Selector)
		set(status, gen, CondMetricsAvailable, false, "InvalidSelector", msg)
		set(status, gen, CondScalingActive, false, "InvalidSelector", "holding: "+msg)
		setReady(status, gen, false)
		r.metrics.failed(ca, errSelector)
		return obs, true
	}
	obs.selector = selector
	pods := &corev1.PodList{}
	if err := r.client.List(ctx, pods, client.InNamespace(ca.Namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		set(status, gen, CondScalingActive, false, "FailedListPods", err.Error())
		setReady(status, gen, false)
		r.metrics.failed(ca, errListPods)
		return obs, true
	}
	obs.pods = pods.Items
	for _, p := range pods.Items {
		if p.DeletionTimestamp.IsZero() && podReady(&p) {
			obs.readyPods = append(obs.readyPods, p.Namespace+"/"+p.Name)
		}
	}

	redisDown := func(err error) (observation, bool) {
		msg := fmt.Sprintf("holding %d replicas: %v", scale.Spec.Replicas, err)
		set(status, gen, CondMetricsAvailable, false, "RedisUnavailable", msg)
		set(status, gen, CondScalingActive, false, "RedisUnavailable", msg)
		setReady(status, gen, false)
		r.warnOnce(ca, CondMetricsAvailable, "RedisUnavailable", msg)
		r.metrics.failed(ca, errRedis)
		return obs, true
	}
	if err := r.store.SaveRules(ctx, ca); err != nil {
		return redisDown(err)
	}
	window := longestWindow(ca)
	obs.samples, err = r.store.Samples(ctx, obs.readyPods, r.now().Add(-window))
	if err != nil {
		return redisDown(err)
	}
	return obs, false
}

// aggregate computes each rule's aggregate over its window (no earlier than
// the last scale) and sets MetricsAvailable from whether every ready pod
// reported within every rule's window.
func (r *Reconciler) aggregate(ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus, obs observation, now time.Time) map[string]rules.Aggregate {
	var lastScale time.Time
	if status.LastScaleTime != nil {
		lastScale = status.LastScaleTime.Time
	}
	out := make(map[string]rules.Aggregate, len(ca.Spec.Rules))
	missing := ""
	for _, rule := range ca.Spec.Rules {
		out[rule.ID] = rules.AggregateSamples(obs.samples, rules.Window(now, rule.WindowSeconds, lastScale))
		fresh := rules.AggregateSamples(obs.samples, rules.Window(now, rule.WindowSeconds, time.Time{}))
		if !fresh.Complete() && missing == "" {
			missing = fmt.Sprintf("%d of %d ready pods sent a sample in the last %ds (rule %s); holding: no decrease and no scale to zero on missing samples",
				fresh.ReportingPods, fresh.ReadyPods, rule.WindowSeconds, rule.ID)
		}
	}
	switch {
	case len(obs.readyPods) == 0:
		set(status, ca.Generation, CondMetricsAvailable, false, "NoReadyPods", "the target has no ready pods")
	case missing != "":
		set(status, ca.Generation, CondMetricsAvailable, false, "MissingSamples", missing)
		r.warnOnce(ca, CondMetricsAvailable, "MissingSamples", missing)
	default:
		set(status, ca.Generation, CondMetricsAvailable, true, "SamplesFresh",
			fmt.Sprintf("all %d ready pods sent samples within every rule's window", len(obs.readyPods)))
	}
	return out
}

// completeInterrupted finishes a scale that the status records but the
// target never saw: the controller stopped between writing its decision and
// scaling. A target changed since the decision (by this controller or
// anyone) is left alone; the rules decide again on fresh samples.
func (r *Reconciler) completeInterrupted(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus, scale *autoscalingv1.Scale) (ctrl.Result, bool, error) {
	last := status.LastDecision
	if ca.Spec.DryRun || last == nil || last.DryRun || last.FromReplicas == last.ToReplicas ||
		last.TargetResourceVersion == "" || last.TargetResourceVersion != scale.ResourceVersion {
		return ctrl.Result{}, false, nil
	}
	if err := updateScale(ctx, r.client, ca, scale, last.ToReplicas); err != nil {
		res, err := r.scaleFailed(ctx, ca, err)
		return res, true, err
	}
	r.recorder.Eventf(ca, nil, corev1.EventTypeNormal, "Scaled", "Scale", "%s %d → %d (completing the decision of %s): %s",
		last.Action, last.FromReplicas, last.ToReplicas, last.Time.Format(time.RFC3339), last.Reason)
	logf.FromContext(ctx).Info("completed interrupted scale", "from", last.FromReplicas, "to", last.ToReplicas, "rule", last.Rule)
	res, err := r.writeStatus(ctx, ca, status, ctrl.Result{RequeueAfter: r.resync})
	return res, true, err
}

func (r *Reconciler) scaleFailed(ctx context.Context, ca *v1alpha1.CustomAutoscaler, err error) (ctrl.Result, error) {
	logf.FromContext(ctx).Error(err, "scaling failed")
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	r.metrics.failed(ca, errUpdateScale)
	r.recorder.Eventf(ca, nil, corev1.EventTypeWarning, "FailedScale", "Scale", "%v", err)
	fresh := &v1alpha1.CustomAutoscaler{}
	if getErr := r.client.Get(ctx, client.ObjectKeyFromObject(ca), fresh); getErr != nil {
		return ctrl.Result{RequeueAfter: r.retry}, nil
	}
	status := fresh.Status.DeepCopy()
	set(status, fresh.Generation, CondAbleToScale, false, "FailedUpdateScale", err.Error())
	setReady(status, fresh.Generation, false)
	return r.writeStatus(ctx, fresh, status, ctrl.Result{RequeueAfter: r.retry})
}

// writeStatus writes the status when it changed, with the object's
// resourceVersion so that a stale controller cannot overwrite a newer one.
func (r *Reconciler) writeStatus(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus, result ctrl.Result) (ctrl.Result, error) {
	if equality.Semantic.DeepEqual(&ca.Status, status) {
		return result, nil
	}
	if err := r.updateStatus(ctx, ca, status); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		r.metrics.failed(ca, errUpdateStatus)
		return ctrl.Result{}, err
	}
	return result, nil
}

func (r *Reconciler) updateStatus(ctx context.Context, ca *v1alpha1.CustomAutoscaler, status *v1alpha1.CustomAutoscalerStatus) error {
	ca.Status = *status
	if err := r.client.Status().Update(ctx, ca); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

func (r *Reconciler) finalize(ctx context.Context, ca *v1alpha1.CustomAutoscaler) error {
	if !controllerutil.ContainsFinalizer(ca, Finalizer) {
		return nil
	}
	if err := r.store.DeleteRules(ctx, ca.Namespace, ca.Name); err != nil {
		return err
	}
	controllerutil.RemoveFinalizer(ca, Finalizer)
	if err := r.client.Update(ctx, ca); err != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	r.metrics.forget(ca.Namespace, ca.Name)
	logf.FromContext(ctx).Info("deleted mirrored rules")
	return nil
}

// warnOnce emits a Warning event when a condition turns false with this
// reason, not on every reconcile that still sees it.
func (r *Reconciler) warnOnce(ca *v1alpha1.CustomAutoscaler, typ, reason, msg string) {
	if c := meta.FindStatusCondition(ca.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason {
		return
	}
	r.recorder.Eventf(ca, nil, corev1.EventTypeWarning, reason, "Evaluate", "%s", msg)
}

// changed says whether a decision is worth recording: any scale, or a hold
// for another rule, action or replica count. Holds that differ only in the
// values seen are not written, to spare the API server a write per sample.
func changed(last *v1alpha1.Decision, d rules.Decision) bool {
	return last == nil || d.To != d.From || last.Action != d.Action || last.Rule != d.Rule ||
		last.FromReplicas != d.From || last.ToReplicas != d.To
}

func scalingActiveReason(d rules.Decision) string {
	switch {
	case d.To == 0:
		return "ScaledToZero"
	case d.Action == rules.ActionHold:
		return "Holding"
	}
	return "Scaling"
}

func longestWindow(ca *v1alpha1.CustomAutoscaler) time.Duration {
	var longest int32
	for _, r := range ca.Spec.Rules {
		longest = max(longest, r.WindowSeconds)
	}
	return time.Duration(longest) * time.Second
}

// activation is the latest wake: the activator's stamp (a malformed one
// counts as none) or, sooner, the one this process's activator noted.
func (r *Reconciler) activation(ca *v1alpha1.CustomAutoscaler) time.Time {
	t, err := time.Parse(time.RFC3339Nano, ca.Annotations[v1alpha1.AnnotationActivation])
	if err != nil {
		t = time.Time{}
	}
	if r.activations != nil {
		if local := r.activations.Latest(ca.Namespace, ca.Name); local.After(t) {
			return local
		}
	}
	return t
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
