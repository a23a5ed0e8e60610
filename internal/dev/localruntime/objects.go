package localruntime

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"github.com/nemesis-ml/nemesis/sidecar"
)

const (
	// LabelLocalRuntime on a Deployment, with value "true", hands its
	// replicas to the local runtime.
	LabelLocalRuntime = "nemesis.dev/local-runtime"
	// LabelNode names the runtime that keeps an EndpointSlice.
	LabelNode = "nemesis.dev/node"
	// ManagedBy is the EndpointSlice managed-by value of the local runtime.
	ManagedBy = "localruntime.nemesis.dev"

	// SidecarName is the container the runtime adds to every pod.
	SidecarName = "nemesis-sidecar"
	// SidecarPort and AdminPort are the sidecar's pod port (named "http",
	// in proxy mode only) and its /ready port (named "admin"), as in
	// manifests/sample-model.
	SidecarPort = 8012
	AdminPort   = 9091
)

// templateHash names a pod template, as the pod-template-hash label does.
func templateHash(t *corev1.PodTemplateSpec) string {
	raw, _ := json.Marshal(t)
	h := fnv.New32a()
	_, _ = h.Write(raw)
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// newPod is the Pod object of one replica of d on node: the template, the
// sidecar container the runtime adds, and a controller reference to d.
func newPod(d *appsv1.Deployment, node, name, hash string) *corev1.Pod {
	tmpl := d.Spec.Template.DeepCopy()
	lbls := map[string]string{}
	for k, v := range tmpl.Labels {
		lbls[k] = v
	}
	lbls[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: d.Namespace, Labels: lbls, Annotations: tmpl.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true),
			}},
		},
		Spec: tmpl.Spec,
	}
	pod.Spec.NodeName = node
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == SidecarName }) {
		mode := sidecarMode(pod.Spec.Containers)
		ports := []corev1.ContainerPort{{Name: "admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP}}
		if mode == sidecar.ModeProxy {
			ports = append([]corev1.ContainerPort{{Name: "http", ContainerPort: SidecarPort, Protocol: corev1.ProtocolTCP}}, ports...)
		}
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name:  SidecarName,
			Image: "nemesis",
			Args:  []string{"sidecar", "--mode", mode},
			Ports: ports,
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("admin")},
			}},
		})
	}
	return pod
}

// sidecarMode is how the added sidecar runs beside the model containers:
// metering only when a model container serves the port named "http" (the
// Service reaches the model directly), else in front of the model on that
// port.
func sidecarMode(models []corev1.Container) string {
	for _, c := range models {
		if c.Name != SidecarName && slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" }) {
			return sidecar.ModeMeter
		}
	}
	return sidecar.ModeProxy
}

// runSpec is how to run a pod's model container as a local process.
type runSpec struct {
	Argv []string
	Env  []string
	Dir  string
	// Port is the model's container port, on the pod's loopback.
	Port int32
	// HealthPath is the model's readiness probe path, given to the sidecar.
	HealthPath string
	// SidecarMode is sidecar.ModeMeter or sidecar.ModeProxy.
	SidecarMode string
}

// modelSpec reads the model container of pod: the one container that is not
// the sidecar. Images are not run: the container must name its command.
func modelSpec(pod *corev1.Pod, podIP string) (runSpec, error) {
	var models []corev1.Container
	for _, c := range pod.Spec.Containers {
		if c.Name != SidecarName {
			models = append(models, c)
		}
	}
	if len(models) != 1 {
		return runSpec{}, fmt.Errorf("the local runtime runs pods of one model container (besides %s), found %d", SidecarName, len(models))
	}
	c := models[0]
	spec := runSpec{Argv: append(slices.Clone(c.Command), c.Args...), Dir: c.WorkingDir, SidecarMode: sidecarMode(models)}
	if len(c.Command) == 0 {
		return runSpec{}, fmt.Errorf("container %s: the local runtime runs commands, not images: set its command", c.Name)
	}
	if len(c.EnvFrom) > 0 {
		return runSpec{}, fmt.Errorf("container %s: envFrom is not supported by the local runtime", c.Name)
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				return runSpec{}, fmt.Errorf("container %s: env %s: only fieldRef is supported by the local runtime", c.Name, e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "status.podIP":
				v = podIP
			case "spec.nodeName":
				v = pod.Spec.NodeName
			default:
				return runSpec{}, fmt.Errorf("container %s: env %s: field %s is not supported by the local runtime", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		spec.Env = append(spec.Env, e.Name+"="+v)
	}
	for _, p := range c.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			spec.Port = p.ContainerPort
			break
		}
	}
	if spec.Port == 0 {
		return runSpec{}, fmt.Errorf("container %s: declare the model's TCP containerPort", c.Name)
	}
	if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil {
		spec.HealthPath = cmp.Or(p.HTTPGet.Path, "/")
	}
	return spec, nil
}

// replica is what plan needs to know of a running pod.
type replica struct {
	Name    string
	Hash    string
	Ready   bool
	Created time.Time
}

// plan says how many pods to start and which to stop so that desired pods
// of the current template run. Surplus pods go unready first, then newest.
// Pods of an older template stay while they are needed to keep desired
// pods ready, as a rolling update with full surge does.
func plan(desired int, hash string, active []replica) (start int, stop []string) {
	var current, old []replica
	readyCurrent := 0
	for _, r := range active {
		if r.Hash == hash {
			current = append(current, r)
			if r.Ready {
				readyCurrent++
			}
		} else {
			old = append(old, r)
		}
	}
	byStopOrder := func(a, b replica) int {
		if a.Ready != b.Ready {
			if a.Ready {
				return 1
			}
			return -1
		}
		return b.Created.Compare(a.Created)
	}
	start = max(desired-len(current), 0)
	if surplus := len(current) - desired; surplus > 0 {
		slices.SortFunc(current, byStopOrder)
		for _, r := range current[:surplus] {
			stop = append(stop, r.Name)
			if r.Ready {
				readyCurrent--
			}
		}
	}
	keepOld := min(max(desired-readyCurrent, 0), len(old))
	slices.SortFunc(old, byStopOrder)
	for _, r := range old[:len(old)-keepOld] {
		stop = append(stop, r.Name)
	}
	return start, stop
}

// podView is what the EndpointSlices and statuses are made of.
type podView struct {
	Pod         *corev1.Pod
	Deployment  string
	Hash        string
	IP          string
	Ready       bool
	Terminating bool
}

// endpointSlices are the slices this node keeps: one per Service that
// selects the template of a Deployment it runs, listing the pods it selects.
func endpointSlices(node string, services []corev1.Service, deploys []appsv1.Deployment, pods []podView) []discoveryv1.EndpointSlice {
	var out []discoveryv1.EndpointSlice
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var tmpl *corev1.Pod
		for _, d := range deploys {
			if d.Namespace == svc.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				tmpl = newPod(&d, node, "", "")
				break
			}
		}
		if tmpl == nil {
			continue
		}
		sl := discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name: svc.Name + "-" + node, Namespace: svc.Namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name,
					discoveryv1.LabelManagedBy:   ManagedBy,
					LabelNode:                    node,
				},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{},
			Endpoints:   []discoveryv1.Endpoint{},
		}
		for _, p := range svc.Spec.Ports {
			if port, ok := targetPort(tmpl, p); ok {
				sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{
					Name: ptr.To(p.Name), Port: ptr.To(port), Protocol: ptr.To(cmp.Or(p.Protocol, corev1.ProtocolTCP)), AppProtocol: p.AppProtocol,
				})
			}
		}
		for _, v := range pods {
			if v.IP == "" || v.Pod.Namespace != svc.Namespace || !sel.Matches(labels.Set(v.Pod.Labels)) {
				continue
			}
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
				Addresses: []string{v.IP},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptr.To(v.Ready && !v.Terminating), Serving: ptr.To(v.Ready), Terminating: ptr.To(v.Terminating),
				},
				NodeName:  ptr.To(node),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: v.Pod.Namespace, Name: v.Pod.Name, UID: v.Pod.UID},
			})
		}
		slices.SortFunc(sl.Endpoints, func(a, b discoveryv1.Endpoint) int { return cmp.Compare(a.TargetRef.Name, b.TargetRef.Name) })
		out = append(out, sl)
	}
	return out
}

// targetPort resolves a Service port's target on a pod: a number, or a
// container port's name.
func targetPort(pod *corev1.Pod, p corev1.ServicePort) (int32, bool) {
	switch {
	case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p.TargetPort.StrVal {
					return cp.ContainerPort, true
				}
			}
		}
		return 0, false
	case p.TargetPort.IntVal != 0:
		return p.TargetPort.IntVal, true
	default:
		return p.Port, true
	}
}

// sameSlice tells whether an existing slice already says what want says.
func sameSlice(have, want *discoveryv1.EndpointSlice) bool {
	return equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		equality.Semantic.DeepEqual(have.Ports, want.Ports) &&
		equality.Semantic.DeepEqual(have.Labels, want.Labels)
}

// deploymentStatus counts d's pods as the ReplicaSet and Deployment
// controllers do: terminating pods are not counted.
func deploymentStatus(d *appsv1.Deployment, hash string, pods []podView, now metav1.Time) appsv1.DeploymentStatus {
	var s appsv1.DeploymentStatus
	for _, v := range pods {
		if v.Deployment != d.Name || v.Pod.Namespace != d.Namespace || v.Terminating {
			continue
		}
		s.Replicas++
		if v.Hash == hash {
			s.UpdatedReplicas++
		}
		if v.Ready {
			s.ReadyReplicas++
			s.AvailableReplicas++
		}
	}
	desired := ptr.Deref(d.Spec.Replicas, 1)
	s.UnavailableReplicas = max(desired-s.AvailableReplicas, 0)
	s.ObservedGeneration = d.Generation
	cond := appsv1.DeploymentCondition{
		Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
		Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability.",
		LastUpdateTime: now, LastTransitionTime: now,
	}
	if s.AvailableReplicas < desired {
		cond.Status, cond.Reason, cond.Message = corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
	}
	for _, c := range d.Status.Conditions {
		if c.Type == cond.Type && c.Status == cond.Status && c.Reason == cond.Reason {
			cond.LastUpdateTime, cond.LastTransitionTime = c.LastUpdateTime, c.LastTransitionTime
		}
	}
	s.Conditions = []appsv1.DeploymentCondition{cond}
	return s
}

// podState is what the runtime knows of one running pod.
type podState struct {
	IP, HostIP string
	Started    time.Time
	Ready      bool
	// ReadySince is when Ready last changed.
	ReadySince time.Time
	Restarts   int32
	// Failed says why the pod could not run, when it could not.
	Failed string
}

// podStatus is the status the kubelet would report for pod in state s.
func podStatus(pod *corev1.Pod, s podState) corev1.PodStatus {
	started := metav1.NewTime(s.Started.Truncate(time.Second))
	if s.Failed != "" {
		return corev1.PodStatus{Phase: corev1.PodFailed, Reason: "LocalRuntime", Message: s.Failed, HostIP: s.HostIP, StartTime: &started}
	}
	ready := corev1.ConditionFalse
	if s.Ready {
		ready = corev1.ConditionTrue
	}
	since := metav1.NewTime(s.ReadySince.Truncate(time.Second))
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    s.HostIP,
		HostIPs:   []corev1.HostIP{{IP: s.HostIP}},
		PodIP:     s.IP,
		PodIPs:    []corev1.PodIP{{IP: s.IP}},
		StartTime: &started,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: started},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: started},
			{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: since},
			{Type: corev1.PodReady, Status: ready, LastTransitionTime: since},
		},
		QOSClass: pod.Status.QOSClass,
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "local://" + c.Image, ContainerID: "local://" + pod.Name + "/" + c.Name,
			Ready: s.Ready, Started: ptr.To(true), RestartCount: s.Restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
	return st
}
