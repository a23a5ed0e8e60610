package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/internal/testing/testenv"
)

// A CustomAutoscaler in another namespace claiming an existing route's
// prefix, or a longer prefix under it, gets no traffic: the older keeps it,
// and the newer says why in its status (kubectl get's Route-Accepted
// column) and an event.
func TestOlderRouteKeepsItsPrefix(t *testing.T) {
	s := newStack(t)
	host := testenv.NewHost(t)
	backends := startBackends(t, host, "owner", "same-prefix", "longer-prefix")
	s.publish("digits", "/models/digits", backends[:1])
	envoy := s.startEnvoy()
	s.waitHosts(envoy, s.namespace+"/digits", 1)
	// Creation times count in seconds.
	time.Sleep(1100 * time.Millisecond)

	intruder := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "aaa-"}}
	if err := s.kube.Create(t.Context(), intruder); err != nil {
		t.Fatal(err)
	}
	s.publishIn(intruder.Name, "digits", "/models/digits", backends[1:2])
	s.publishIn(intruder.Name, "predict", "/models/digits/predict", backends[2:3])
	owner := s.namespace + "/digits"
	for _, name := range []string{"digits", "predict"} {
		testenv.Eventually(t, 30*time.Second, name+" refused its route", func() error {
			ca := &v1alpha1.CustomAutoscaler{}
			if err := s.kube.Get(t.Context(), client.ObjectKey{Namespace: intruder.Name, Name: name}, ca); err != nil {
				return err
			}
			c := meta.FindStatusCondition(ca.Status.Conditions, "RouteAccepted")
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "PathPrefixTaken" || !strings.Contains(c.Message, owner) {
				return fmt.Errorf("RouteAccepted %+v", c)
			}
			return nil
		})
	}
	for i := range 20 {
		if code, body, err := get(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/models/digits/predict", s.envoyPort)); err != nil || body != "owner" {
			t.Fatalf("request %d: %d %q %v, want the older route's backend", i, code, body, err)
		}
	}

	// What kubectl get shows: the API server's table of the CRD's printer
	// columns.
	table := s.table(intruder.Name)
	column := -1
	for i, c := range table.ColumnDefinitions {
		if c.Name == "Route-Accepted" {
			column = i
		}
	}
	if column < 0 || len(table.Rows) != 2 {
		t.Fatalf("no Route-Accepted column or not 2 rows: %+v", table)
	}
	for _, row := range table.Rows {
		if row.Cells[column] != "False" {
			t.Errorf("kubectl get shows Route-Accepted %v for %v", row.Cells[column], row.Cells[0])
		}
	}
	testenv.Eventually(t, 10*time.Second, "a PathPrefixTaken event", func() error {
		events := &corev1.EventList{}
		if err := s.kube.List(t.Context(), events, client.InNamespace(intruder.Name)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == "PathPrefixTaken" && strings.Contains(e.Message, owner) {
				return nil
			}
		}
		return fmt.Errorf("%d events, none PathPrefixTaken naming %s", len(events.Items), owner)
	})
}

// table GETs the namespace's CustomAutoscalers as kubectl get does.
func (s *stack) table(namespace string) *metav1.Table {
	s.t.Helper()
	cfg := testenv.Kube(s.t)
	cfg.GroupVersion = &v1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	raw, err := rc.Get().Namespace(namespace).Resource("customautoscalers").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	table := &metav1.Table{}
	if err := json.Unmarshal(raw, table); err != nil {
		s.t.Fatal(err)
	}
	return table
}
