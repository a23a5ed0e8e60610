package console

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/decisions"
	"github.com/nemesis-ml/nemesis/internal/httpauth"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

func TestPercentileBound(t *testing.T) {
	for name, tc := range map[string]struct {
		buckets []int64
		want    float64 // 0: nil
	}{
		"none":                    {[]int64{0, 0, 0, 0, 0, 0, 0, 0, 0}, 0},
		"all fast":                {[]int64{10, 0, 0, 0, 0, 0, 0, 0, 0}, 10},
		"95th in the fourth":      {[]int64{50, 20, 20, 10, 0, 0, 0, 0, 0}, 100},
		"exactly 95 in the third": {[]int64{50, 20, 25, 5, 0, 0, 0, 0, 0}, 50},
		"above the last edge":     {[]int64{1, 0, 0, 0, 0, 0, 0, 0, 99}, 0},
	} {
		got := percentileBound(tc.buckets, 0.95)
		if (got == nil) != (tc.want == 0) || got != nil && *got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func TestState(t *testing.T) {
	cond := func(typ string, ok bool, reason string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: reason + " message"}
	}
	for name, tc := range map[string]struct {
		replicas, desired, max int32
		conditions             []metav1.Condition
		want                   string
	}{
		"at zero":                 {0, 0, 3, nil, StateAtZero},
		"waking":                  {0, 1, 3, nil, StateWaking},
		"scaling up":              {1, 2, 3, nil, StateScalingUp},
		"scaling down":            {3, 2, 3, nil, StateScalingDown},
		"at max":                  {3, 3, 3, nil, StateAtMax},
		"steady":                  {2, 2, 3, []metav1.Condition{cond("ScalingActive", false, "Holding")}, StateSteady},
		"target unreadable":       {2, 2, 3, []metav1.Condition{cond("AbleToScale", false, "FailedGetScale")}, StateError},
		"redis down is an error":  {2, 2, 3, []metav1.Condition{cond("ScalingActive", false, "RedisUnavailable")}, StateError},
		"resting at zero is fine": {0, 0, 3, []metav1.Condition{cond("ScalingActive", false, "ScaledToZero")}, StateAtZero},
	} {
		t.Run(name, func(t *testing.T) {
			ca := &v1alpha1.CustomAutoscaler{
				Spec:   v1alpha1.CustomAutoscalerSpec{MaxReplicas: tc.max},
				Status: v1alpha1.CustomAutoscalerStatus{Replicas: tc.replicas, DesiredReplicas: tc.desired, Conditions: tc.conditions},
			}
			got, problem := State(ca)
			if got != tc.want {
				t.Fatalf("state %q, want %q", got, tc.want)
			}
			if (got == StateError) != (problem != "") {
				t.Errorf("problem %q with state %q", problem, got)
			}
		})
	}
}

// guarded is a console with a token and no data sources: every request
// here is refused before it would read any.
func guarded(t *testing.T) *http.ServeMux {
	t.Helper()
	var auth httpauth.Authorizer
	if err := auth.Grant([]string{"s3cret"}, httpauth.Read, httpauth.SettingsWrite); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Auth: &auth, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	return mux
}

func serve(mux http.Handler, method, target string, form url.Values, cookie *http.Cookie) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, r)
	return rec
}

func TestHistorySaysWhatEachVersionChanged(t *testing.T) {
	v1 := settings.Settings{Version: 1, Policy: "round_robin", MaxConnections: 100, TimeoutSeconds: 30, RetryAttempts: 2}
	v2 := v1
	v2.Version, v2.Policy, v2.TimeoutSeconds = 2, "least_connections", 10
	v3 := v2
	v3.Version = 3 // the same values stored again
	got := history([]settings.Settings{v3, v2, v1})
	want := [][]string{{}, {"policy: round_robin → least_connections", "timeout: 30 → 10"}, nil}
	for i, v := range got {
		if !slices.Equal(v.Changes, want[i]) || v.Compared != (i < 2) || v.Version != int64(3-i) {
			t.Errorf("version %d: changes %q compared %v, want %q and %v", v.Version, v.Changes, v.Compared, want[i], i < 2)
		}
	}
}

func TestPagesNeedALogin(t *testing.T) {
	mux := guarded(t)
	for _, path := range []string{"/ui/", "/ui/requests", "/ui/loadbalancer", "/ui/autoscalers/ns/name"} {
		rec := serve(mux, http.MethodGet, path, nil, nil)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login?next="+url.QueryEscape(path) {
			t.Errorf("%s without a login: %d to %q", path, rec.Code, rec.Header().Get("Location"))
		}
	}
	wrong := &http.Cookie{Name: cookieName, Value: "guess"}
	if rec := serve(mux, http.MethodGet, "/ui/", nil, wrong); rec.Code != http.StatusSeeOther {
		t.Errorf("a wrong token's cookie: %d, want the login page", rec.Code)
	}
	rec := serve(mux, http.MethodPost, "/ui/loadbalancer/revert", url.Values{"environment": {"e"}, "version": {"1"}}, wrong)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("a revert with a wrong token: %d, want 401", rec.Code)
	}
}

func TestLoginKeepsTheTokenInAStrictHttpOnlyCookie(t *testing.T) {
	mux := guarded(t)
	rec := serve(mux, http.MethodPost, "/ui/login", url.Values{"token": {"guess"}, "next": {"/ui/requests"}}, nil)
	if rec.Code != http.StatusUnauthorized || len(rec.Result().Cookies()) != 0 {
		t.Errorf("a wrong token: %d with cookies %v, want 401 and none", rec.Code, rec.Result().Cookies())
	}
	rec = serve(mux, http.MethodPost, "/ui/login", url.Values{"token": {"s3cret"}, "next": {"/ui/requests"}}, nil)
	cookies := rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/requests" || len(cookies) != 1 {
		t.Fatalf("login: %d to %q with cookies %v", rec.Code, rec.Header().Get("Location"), cookies)
	}
	if c := cookies[0]; c.Name != cookieName || c.Value != "s3cret" || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v, want HttpOnly and SameSite=Strict", c)
	}
	rec = serve(mux, http.MethodPost, "/ui/login", url.Values{"token": {"s3cret"}, "next": {"//evil.example/ui/"}}, nil)
	if loc := rec.Header().Get("Location"); loc != "/ui/" {
		t.Errorf("login redirected to %q, want the console only", loc)
	}
}

func TestJSONAPIsNeedTheReadScope(t *testing.T) {
	mux := guarded(t)
	for _, path := range []string{"/autoscalers", "/autoscalers/ns/name", "/proxy/logs/export?format=csv", "/proxy/logs/summary", "/reports"} {
		rec := serve(mux, http.MethodGet, path, nil, nil)
		var body struct{ Field string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusUnauthorized || body.Field != "Authorization" {
			t.Errorf("%s without a token: %d %s, want 401 naming Authorization", path, rec.Code, rec.Body)
		}
	}
}

func TestExportRefusesNamingTheParameter(t *testing.T) {
	mux := guarded(t)
	for query, field := range map[string]string{
		"":                           "format",
		"format=xml":                 "format",
		"format=csv&limit=10":        "limit",
		"format=csv&cursor=abc":      "cursor",
		"format=ndjson&status=abc":   "status",
		"format=ndjson&colour=green": "colour",
		"format=csv&until=":          "until",
	} {
		rec := serve(mux, http.MethodGet, "/proxy/logs/export?"+query, nil, &http.Cookie{Name: cookieName, Value: "s3cret"})
		var body struct{ Field string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusBadRequest || body.Field != field {
			t.Errorf("%q: %d %s, want 400 naming %q", query, rec.Code, rec.Body, field)
		}
	}
}

func TestReportsRefuseNamingTheParameter(t *testing.T) {
	mux := guarded(t)
	for query, field := range map[string]string{
		"period=month":                                          "period",
		"since=yesterday":                                       "since",
		"until=2026-13-01T00:00:00Z":                            "until",
		"period=day&since=2026-01-01T00:00:00Z":                 "period",
		"since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z": "until",
		"format=xml":                                            "format",
		"colour=blue":                                           "colour",
		// Given empty is refused, not taken as absent.
		"until=":  "until",
		"since=":  "since",
		"period=": "period",
		"format=": "format",
	} {
		rec := serve(mux, http.MethodGet, "/reports?"+query, nil, &http.Cookie{Name: cookieName, Value: "s3cret"})
		var body struct{ Field string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusBadRequest || body.Field != field {
			t.Errorf("%q: %d %s, want 400 naming %q", query, rec.Code, rec.Body, field)
		}
	}
}

func TestWakeStages(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type stage struct {
		name       string
		millis, at int64
		width      string
	}
	for name, tc := range map[string]struct {
		wake *decisions.Wake
		want []stage
	}{
		"no wake": {nil, nil},
		"every stage": {
			&decisions.Wake{RequestHeld: at(0), Decided: at(10), ScaleWritten: at(20), PodCreated: at(50), PodReady: at(850), EndpointAcked: at(980), Released: at(1000)},
			[]stage{{"decided", 10, 10, "1.00"}, {"scale written", 10, 20, "1.00"}, {"pod created", 30, 50, "3.00"}, {"pod ready", 800, 850, "80.00"},
				{"endpoint ACKed", 130, 980, "13.00"}, {"released", 20, 1000, "2.00"}},
		},
		"a wake under way, its pod unseen": {
			&decisions.Wake{RequestHeld: at(0), Decided: at(100), ScaleWritten: at(400)},
			[]stage{{"decided", 100, 100, "25.00"}, {"scale written", 300, 400, "75.00"}},
		},
		"without the pod's stages the stretch joins its neighbours": {
			&decisions.Wake{RequestHeld: at(0), Decided: at(0), ScaleWritten: at(0), EndpointAcked: at(900), Released: at(1000)},
			[]stage{{"decided", 0, 0, "0.00"}, {"scale written", 0, 0, "0.00"}, {"endpoint ACKed", 900, 900, "90.00"}, {"released", 100, 1000, "10.00"}},
		},
		"a stretch below zero is drawn empty": {
			&decisions.Wake{RequestHeld: at(5), Decided: at(0), ScaleWritten: at(100)},
			[]stage{{"decided", -5, -5, "0.00"}, {"scale written", 100, 95, "100.00"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var got []stage
			for _, s := range wakeStages(tc.wake) {
				got = append(got, stage{s.Name, s.Millis(), s.AtMillis, s.Width})
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("stages %v, want %v", got, tc.want)
			}
		})
	}
}

// A name Kubernetes refuses names no autoscaler: not found, without asking
// the API server (which answered such names with an error, then a 503).
func TestAutoscalerWithANameKubernetesRefusesIsNotFound(t *testing.T) {
	c := &Console{}
	for _, key := range [][2]string{{"Bad_NS", "digits"}, {"demo", "a/b"}, {"demo", strings.Repeat("x", 254)}, {"", "digits"}} {
		if _, err := c.detail(t.Context(), key[0], key[1]); !errors.Is(err, errNotFound) {
			t.Errorf("%q/%q: %v, want not found", key[0], key[1], err)
		}
	}
}
