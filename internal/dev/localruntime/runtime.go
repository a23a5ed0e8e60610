// Package localruntime is the local runtime of `nemesis-dev dev` and the
// end-to-end tests, a development stand-in for a ReplicaSet controller, a
// kubelet and the EndpointSlice controller together. It watches the
// Deployments labelled nemesis.dev/local-runtime=true and runs each replica
// on this machine: a network namespace with a 10.213.x.x address as the
// pod IP, the model container's command inside it, and `nemesis sidecar` in
// front of the model. It keeps the Pods, their EndpointSlices and the
// Deployments' status true in the API server, and on scale-down takes a pod
// out of its endpoints before it drains and stops it. Real clusters use
// their kubelet.
package localruntime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Config is where the runtime runs pods and what they talk to.
type Config struct {
	// Kube is the API server.
	Kube *rest.Config
	// Node names this runtime: pods get it as spec.nodeName, and it only
	// touches pods and EndpointSlices of its own node. Default nemesis-dev.
	Node string
	// Namespace limits the runtime to one namespace; empty means all.
	Namespace string
	// Dir holds each pod's logs, in <namespace>_<pod>/.
	Dir string
	// Nemesis is the nemesis binary: it runs the sidecar, and a container
	// command "nemesis" means it too.
	Nemesis string
	// Controller is the base URL of the controller's POST /metrics on this
	// machine; empty: the sidecars push nothing.
	Controller      string
	ControllerToken string
	// EndpointDelay is how long a leaving pod still serves after it left its
	// EndpointSlices, so that Envoy hears of it before the sidecar stops
	// accepting (what the sample manifest's preStop sleep does).
	EndpointDelay time.Duration
	Log           *slog.Logger
}

// Runtime runs the pods; see the package comment.
type Runtime struct {
	cfg        Config
	controller string // host:port
	client     client.Client
	cache      cache.Cache
	wake       chan struct{}

	mu   sync.Mutex
	pods map[string]*localPod // namespace/name

	// backoff delays new pods of a Deployment whose last pod failed to start.
	backoff map[string]backoff
}

type backoff struct {
	until time.Time
	wait  time.Duration
}

// New returns a runtime; Run starts it.
func New(cfg Config) (*Runtime, error) {
	if cfg.Node == "" {
		cfg.Node = "nemesis-dev"
	}
	if cfg.Nemesis == "" || cfg.Dir == "" {
		return nil, errors.New("the local runtime needs the nemesis binary and a folder for logs")
	}
	r := &Runtime{cfg: cfg, wake: make(chan struct{}, 1), pods: map[string]*localPod{}, backoff: map[string]backoff{}}
	if cfg.Controller != "" {
		u, err := url.Parse(cfg.Controller)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("parsing controller URL %q: want http://host:port", cfg.Controller)
		}
		r.controller = u.Host
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building scheme: %w", err)
	}
	opts := cache.Options{
		Scheme: scheme,
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}: {Label: labels.SelectorFromSet(labels.Set{LabelLocalRuntime: "true"})},
			&corev1.Pod{}:        {Field: fields.OneTermEqualSelector("spec.nodeName", cfg.Node)},
			&discoveryv1.EndpointSlice{}: {Label: labels.SelectorFromSet(labels.Set{
				discoveryv1.LabelManagedBy: ManagedBy, LabelNode: cfg.Node,
			})},
		},
	}
	if cfg.Namespace != "" {
		opts.DefaultNamespaces = map[string]cache.Config{cfg.Namespace: {}}
	}
	var err error
	if r.cache, err = cache.New(cfg.Kube, opts); err != nil {
		return nil, fmt.Errorf("creating kubernetes cache: %w", err)
	}
	if r.client, err = client.New(cfg.Kube, client.Options{Scheme: scheme}); err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	return r, nil
}

// Run runs pods until ctx ends, then stops them all and removes their
// objects from the API server.
func (r *Runtime) Run(ctx context.Context) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.poke() },
		UpdateFunc: func(any, any) { r.poke() },
		DeleteFunc: func(any) { r.poke() },
	}
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Pod{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		inf, err := r.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	cacheCtx, stopCache := context.WithCancel(context.Background())
	defer stopCache()
	errc := make(chan error, 1)
	go func() { errc <- r.cache.Start(cacheCtx) }()
	if !r.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("kubernetes cache did not sync: %w", ctx.Err())
	}
	r.cfg.Log.Info("local runtime running", "node", r.cfg.Node, "namespace", r.cfg.Namespace, "dir", r.cfg.Dir)
	r.poke()
	resync := time.NewTicker(5 * time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.shutdown()
		case err := <-errc:
			return errors.Join(fmt.Errorf("kubernetes cache stopped: %w", err), r.shutdown())
		case <-resync.C:
		case <-r.wake:
		}
		if err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("local runtime", "err", err)
		}
	}
}

func (r *Runtime) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runtime) snapshot() []*localPod {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*localPod, 0, len(r.pods))
	for _, p := range r.pods {
		out = append(out, p)
	}
	return out
}

// reconcile brings the pods, their statuses, the EndpointSlices and the
// Deployments' statuses in line with the Deployments. Errors are collected;
// the next pass retries.
func (r *Runtime) reconcile(ctx context.Context) error {
	var deploys appsv1.DeploymentList
	var apiPods corev1.PodList
	var services corev1.ServiceList
	var epSlices discoveryv1.EndpointSliceList
	for _, list := range []client.ObjectList{&deploys, &apiPods, &services, &epSlices} {
		if err := r.cache.List(ctx, list); err != nil {
			return fmt.Errorf("listing %T: %w", list, err)
		}
	}
	var errs []error
	apiByKey := map[string]*corev1.Pod{}
	for i := range apiPods.Items {
		p := &apiPods.Items[i]
		apiByKey[p.Namespace+"/"+p.Name] = p
	}

	// Pods deleted by someone else (kubectl delete pod) leave too.
	for _, p := range r.snapshot() {
		obj, ok := apiByKey[p.obj.Namespace+"/"+p.obj.Name]
		p.mu.Lock()
		p.seen = p.seen || ok && obj.UID == p.obj.UID
		gone := p.seen && (!ok || obj.DeletionTimestamp != nil)
		p.mu.Unlock()
		if gone {
			errs = append(errs, r.leave(ctx, p))
		}
	}

	// Scale each Deployment; the pods of vanished ones leave.
	wanted := map[string]bool{}
	for i := range deploys.Items {
		d := &deploys.Items[i]
		if d.DeletionTimestamp != nil {
			continue
		}
		wanted[d.Namespace+"/"+d.Name] = true
		errs = append(errs, r.scale(ctx, d))
	}
	for _, p := range r.snapshot() {
		if !wanted[p.obj.Namespace+"/"+p.deployment] {
			errs = append(errs, r.leave(ctx, p))
		}
	}

	// Pods of this node that nothing runs (left by an earlier run) go at once.
	r.mu.Lock()
	var strays []*corev1.Pod
	for key, obj := range apiByKey {
		if p, ok := r.pods[key]; !ok || p.obj.UID != obj.UID {
			strays = append(strays, obj)
		}
	}
	r.mu.Unlock()
	for _, obj := range strays {
		errs = append(errs, r.deletePod(ctx, obj, 0))
	}

	// Slices first, so a pod that turned ready is routed to one write
	// sooner; a leaving pod's processes are stopped only once the slices
	// say it left.
	views := r.views()
	slicesErr := r.writeSlices(ctx, services.Items, deploys.Items, epSlices.Items, views)
	if slicesErr != errStale {
		errs = append(errs, slicesErr)
	}
	if slicesErr == nil {
		for _, p := range r.snapshot() {
			p.mu.Lock()
			// A pod that failed to start goes once its status said why.
			shown := p.state.Failed == "" || p.written != nil && p.written.Phase == corev1.PodFailed
			begin := p.terminating && !p.stopping && shown
			p.stopping = p.stopping || begin
			p.mu.Unlock()
			if begin {
				go r.finish(p)
			}
		}
	}
	for _, p := range r.snapshot() {
		errs = append(errs, r.writeStatus(ctx, p))
	}
	for i := range deploys.Items {
		d := &deploys.Items[i]
		want := deploymentStatus(d, templateHash(&d.Spec.Template), views, metav1.Now())
		if equality.Semantic.DeepEqual(d.Status, want) {
			continue
		}
		d = d.DeepCopy()
		d.Status = want
		if err := r.client.Status().Update(ctx, d); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("updating status of deployment %s/%s: %w", d.Namespace, d.Name, err))
		}
	}
	return errors.Join(errs...)
}

// scale starts and stops pods of d as plan says.
func (r *Runtime) scale(ctx context.Context, d *appsv1.Deployment) error {
	hash := templateHash(&d.Spec.Template)
	var active []replica
	byName := map[string]*localPod{}
	for _, p := range r.snapshot() {
		p.mu.Lock()
		if p.obj.Namespace == d.Namespace && p.deployment == d.Name && !p.terminating {
			active = append(active, replica{Name: p.obj.Name, Hash: p.hash, Ready: p.state.Ready, Created: p.created})
			byName[p.obj.Name] = p
		}
		p.mu.Unlock()
	}
	start, stop := plan(int(ptr.Deref(d.Spec.Replicas, 1)), hash, active)
	var errs []error
	for _, name := range stop {
		errs = append(errs, r.leave(ctx, byName[name]))
	}
	key := d.Namespace + "/" + d.Name
	b := r.backoff[key]
	if start == 0 || time.Now().Before(b.until) {
		return errors.Join(errs...)
	}
	for range start {
		if err := r.startPod(ctx, d, hash); err != nil {
			// A broken template must not spin: wait longer after each failure.
			b.wait = min(max(2*b.wait, time.Second), time.Minute)
			b.until = time.Now().Add(b.wait)
			r.backoff[key] = b
			return errors.Join(append(errs, err)...)
		}
	}
	delete(r.backoff, key)
	return errors.Join(errs...)
}

func (r *Runtime) startPod(ctx context.Context, d *appsv1.Deployment, hash string) error {
	obj := newPod(d, r.cfg.Node, d.Name+"-"+hash+"-"+rand.String(5), hash)
	if err := r.client.Create(ctx, obj); err != nil {
		return fmt.Errorf("creating pod for deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	p := &localPod{
		obj: obj, deployment: d.Name, hash: hash, created: time.Now(),
		log: r.cfg.Log.With("pod", obj.Namespace+"/"+obj.Name),
	}
	p.state.Started = p.created
	p.state.ReadySince = p.created
	r.mu.Lock()
	r.pods[obj.Namespace+"/"+obj.Name] = p
	r.mu.Unlock()
	err := p.start(podEnv{
		nemesis: r.cfg.Nemesis, dir: r.cfg.Dir, controller: r.controller,
		controllerToken: r.cfg.ControllerToken, poke: r.poke,
	})
	if err != nil {
		// The pod shows why it failed; it is replaced on a later pass.
		p.mu.Lock()
		p.state.Failed = err.Error()
		p.terminating = true
		p.mu.Unlock()
		p.log.Error("starting pod", "err", err)
		return fmt.Errorf("starting pod %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	// setup is the sandbox's share of the pod's start-up: the Pod object,
	// its network namespace and the processes.
	p.log.Info("pod started", "ip", p.ns.Addr, "setup", time.Since(p.created))
	return nil
}

// leave takes p out of service: its object is marked for deletion and it
// stops being ready; the pass's slice write then lets finish stop it.
func (r *Runtime) leave(ctx context.Context, p *localPod) error {
	p.mu.Lock()
	if p.terminating {
		p.mu.Unlock()
		return nil
	}
	p.terminating = true
	p.setReady(false)
	p.mu.Unlock()
	p.log.Info("pod leaving")
	grace := int64(30)
	if g := p.obj.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	return r.deletePod(ctx, p.obj, grace)
}

// finish waits out EndpointDelay, stops p's processes and removes it.
func (r *Runtime) finish(p *localPod) {
	p.mu.Lock()
	failed := p.state.Failed != ""
	p.mu.Unlock()
	if !failed {
		time.Sleep(r.cfg.EndpointDelay)
	}
	if err := p.stop(); err != nil {
		p.log.Warn("stopping pod", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.deletePod(ctx, p.obj, 0); err != nil {
		p.log.Warn("deleting pod", "err", err)
	}
	r.mu.Lock()
	delete(r.pods, p.obj.Namespace+"/"+p.obj.Name)
	r.mu.Unlock()
	p.log.Info("pod stopped")
	r.poke()
}

func (r *Runtime) deletePod(ctx context.Context, obj *corev1.Pod, grace int64) error {
	err := r.client.Delete(ctx, obj, client.GracePeriodSeconds(grace), client.Preconditions{UID: &obj.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	return nil
}

func (r *Runtime) views() []podView {
	var out []podView
	for _, p := range r.snapshot() {
		p.mu.Lock()
		out = append(out, podView{
			Pod: p.obj, Deployment: p.deployment, Hash: p.hash,
			IP: p.state.IP, Ready: p.state.Ready, Terminating: p.terminating,
		})
		p.mu.Unlock()
	}
	return out
}

func (r *Runtime) writeStatus(ctx context.Context, p *localPod) error {
	p.mu.Lock()
	want := podStatus(p.obj, p.state)
	same := p.written != nil && equality.Semantic.DeepEqual(*p.written, want)
	p.mu.Unlock()
	if same {
		return nil
	}
	obj := p.obj.DeepCopy()
	obj.Status = want
	obj.ResourceVersion = ""
	if err := r.client.Status().Update(ctx, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating status of pod %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	p.mu.Lock()
	p.written = &want
	p.mu.Unlock()
	return nil
}

// writeSlices writes the slices views call for. It returns errStale when
// the cache was behind: the watch event that brings it up to date wakes the
// next pass.
func (r *Runtime) writeSlices(ctx context.Context, services []corev1.Service, deploys []appsv1.Deployment, have []discoveryv1.EndpointSlice, views []podView) error {
	var live []appsv1.Deployment
	for _, d := range deploys {
		if d.DeletionTimestamp == nil {
			live = append(live, d)
		}
	}
	want := endpointSlices(r.cfg.Node, services, live, views)
	haveByName := map[string]*discoveryv1.EndpointSlice{}
	for i := range have {
		haveByName[have[i].Namespace+"/"+have[i].Name] = &have[i]
	}
	var errs []error
	for i := range want {
		w := &want[i]
		key := w.Namespace + "/" + w.Name
		h, ok := haveByName[key]
		delete(haveByName, key)
		switch {
		case !ok:
			if err := r.client.Create(ctx, w); apierrors.IsAlreadyExists(err) {
				// The cache is behind: update what is there.
				cur := &discoveryv1.EndpointSlice{}
				if err = r.client.Get(ctx, client.ObjectKeyFromObject(w), cur); err == nil {
					w.ResourceVersion = cur.ResourceVersion
					err = r.client.Update(ctx, w)
				}
				errs = append(errs, wrapSlice(err, key))
			} else {
				errs = append(errs, wrapSlice(err, key))
			}
		case !sameSlice(h, w):
			w.ResourceVersion = h.ResourceVersion
			errs = append(errs, wrapSlice(r.client.Update(ctx, w), key))
		}
	}
	for key, h := range haveByName {
		if err := r.client.Delete(ctx, h); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, wrapSlice(err, key))
		}
	}
	stale := false
	errs = slices.DeleteFunc(errs, func(err error) bool {
		stale = stale || apierrors.IsConflict(err)
		return err == nil || apierrors.IsConflict(err)
	})
	if len(errs) == 0 && stale {
		return errStale
	}
	return errors.Join(errs...)
}

var errStale = errors.New("the cache is behind")

// writeSlicesFresh is writeSlices on slices read from the API server, for
// shutdown, which has no next pass.
func (r *Runtime) writeSlicesFresh(ctx context.Context, services []corev1.Service, deploys []appsv1.Deployment, views []podView) error {
	var have discoveryv1.EndpointSliceList
	opts := []client.ListOption{client.MatchingLabels{discoveryv1.LabelManagedBy: ManagedBy, LabelNode: r.cfg.Node}}
	if r.cfg.Namespace != "" {
		opts = append(opts, client.InNamespace(r.cfg.Namespace))
	}
	if err := r.client.List(ctx, &have, opts...); err != nil {
		return fmt.Errorf("listing endpointslices: %w", err)
	}
	return r.writeSlices(ctx, services, deploys, have.Items, views)
}

func wrapSlice(err error, key string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("writing endpointslice %s: %w", key, err)
}

// shutdown stops every pod: out of the slices first, then the processes,
// then their objects.
func (r *Runtime) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pods := r.snapshot()
	for _, p := range pods {
		p.mu.Lock()
		p.terminating, p.stopping = true, true
		p.setReady(false)
		p.mu.Unlock()
	}
	var services corev1.ServiceList
	var deploys appsv1.DeploymentList
	var errs []error
	for _, list := range []client.ObjectList{&services, &deploys} {
		errs = append(errs, r.cache.List(ctx, list))
	}
	errs = append(errs, r.writeSlicesFresh(ctx, services.Items, deploys.Items, r.views()))
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			if err := p.stop(); err != nil {
				p.log.Warn("stopping pod", "err", err)
			}
		})
	}
	wg.Wait()
	for _, p := range pods {
		errs = append(errs, r.deletePod(ctx, p.obj, 0))
	}
	r.mu.Lock()
	r.pods = map[string]*localPod{}
	r.mu.Unlock()
	errs = append(errs, r.writeSlicesFresh(ctx, services.Items, deploys.Items, nil))
	for i := range deploys.Items {
		d := deploys.Items[i].DeepCopy()
		d.Status = deploymentStatus(d, "", nil, metav1.Now())
		if err := r.client.Status().Update(ctx, d); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	r.cfg.Log.Info("local runtime stopped", "pods", len(pods))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping the local runtime: %w", err)
	}
	return nil
}
