package console

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/nemesis-ml/nemesis/xds/server"
	"github.com/nemesis-ml/nemesis/xds/settings"
)

// historyShown is how many versions the page lists per environment.
const historyShown = 20

// Environment is one environment's part of the load-balancer page.
type Environment struct {
	Name    string               `json:"name"`
	Current settings.Settings    `json:"current"`
	History []Version            `json:"history"`
	Envoys  []server.EnvoyStatus `json:"envoys"`
}

// Version is one stored version of an environment's settings and what it
// changed from the version before it.
type Version struct {
	settings.Settings
	// Changes are "field: old → new", one per changed field; none for the
	// oldest version shown, whose predecessor the page does not read
	// (Compared false).
	Changes  []string `json:"changes"`
	Compared bool     `json:"-"`
}

// history pairs each version (newest first) with what it changed from the
// next older one.
func history(versions []settings.Settings) []Version {
	out := make([]Version, len(versions))
	for i, v := range versions {
		out[i].Settings = v
		if i+1 < len(versions) {
			out[i].Changes, out[i].Compared = changes(versions[i+1], v), true
		}
	}
	return out
}

// changes lists the fields of the settings that differ between old and
// cur, in the order the API documents them.
func changes(old, cur settings.Settings) []string {
	out := []string{}
	for _, f := range []struct {
		name     string
		old, cur any
	}{
		{"policy", old.Policy, cur.Policy},
		{"max connections", old.MaxConnections, cur.MaxConnections},
		{"timeout", old.TimeoutSeconds, cur.TimeoutSeconds},
		{"retry attempts", old.RetryAttempts, cur.RetryAttempts},
		{"retry budget %", old.RetryBudgetPercent, cur.RetryBudgetPercent},
		{"stream idle timeout", old.StreamIdleTimeoutSeconds, cur.StreamIdleTimeoutSeconds},
	} {
		if f.old != f.cur {
			out = append(out, fmt.Sprintf("%s: %v → %v", f.name, f.old, f.cur))
		}
	}
	return out
}

type loadBalancerData struct {
	Environments []Environment
	// Flash says what the last revert did.
	Flash      string
	FlashError bool
}

func (c *Console) environments(r *http.Request) ([]Environment, error) {
	current, err := c.cfg.Settings.All(r.Context())
	if err != nil {
		return nil, fmt.Errorf("reading settings: %w", err)
	}
	envoys := map[string][]server.EnvoyStatus{}
	for _, st := range c.cfg.Envoys() {
		envoys[st.Environment] = append(envoys[st.Environment], st)
		if _, ok := current[st.Environment]; !ok {
			current[st.Environment] = settings.Settings{Environment: st.Environment, Default: true}
		}
	}
	out := make([]Environment, 0, len(current))
	for name, cur := range current {
		hist, err := c.cfg.Settings.History(r.Context(), name, historyShown)
		if err != nil {
			return nil, fmt.Errorf("reading the settings history of %q: %w", name, err)
		}
		list := envoys[name]
		sort.Slice(list, func(i, j int) bool { return list[i].Node < list[j].Node })
		out = append(out, Environment{Name: name, Current: cur, History: history(hist), Envoys: list})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (c *Console) loadBalancerPage(w http.ResponseWriter, r *http.Request) {
	envs, err := c.environments(r)
	if err != nil {
		c.cfg.Log.Error("console load balancer", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	q := r.URL.Query()
	data := loadBalancerData{Environments: envs, Flash: q.Get("flash"), FlashError: q.Get("failed") != ""}
	c.render(w, r, http.StatusOK, "loadbalancer", page{Title: "Load balancer", Nav: "loadbalancer", Data: data})
}

// revert stores an old version's values as a new version through the
// settings API (PUT with ?wait=ack, the caller's token), so a revert is
// validated, logged and acknowledged like any other change.
func (c *Console) revert(w http.ResponseWriter, r *http.Request) {
	env := r.PostFormValue("environment")
	version, err := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	if err != nil || env == "" {
		c.fail(w, r, http.StatusBadRequest, "A revert needs an environment and a version number.")
		return
	}
	hist, err := c.cfg.Settings.History(r.Context(), env, 1000)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	var old *settings.Settings
	for i := range hist {
		if hist[i].Version == version {
			old = &hist[i]
		}
	}
	if old == nil {
		c.fail(w, r, http.StatusNotFound, fmt.Sprintf("Environment %q has no version %d among its last 1000.", env, version))
		return
	}
	body, _ := json.Marshal(map[string]any{
		"environment": env, "policy": old.Policy, "max_connections": old.MaxConnections, "timeout_seconds": old.TimeoutSeconds,
	})
	put, err := http.NewRequestWithContext(r.Context(), http.MethodPut, "/loadbalancer/settings?wait=ack", bytes.NewReader(body))
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	put.Header.Set("Authorization", withBearer(r).Header.Get("Authorization"))
	put.Header.Set("Content-Type", "application/json")
	rec := &recorder{header: http.Header{}}
	c.cfg.SettingsAPI.ServeHTTP(rec, put)
	var answer struct {
		Version int64             `json:"version"`
		AckedBy []json.RawMessage `json:"acked_by"`
		Error   string            `json:"error"`
	}
	_ = json.Unmarshal(rec.body.Bytes(), &answer)
	v := url.Values{}
	switch {
	case rec.code == http.StatusOK:
		v.Set("flash", fmt.Sprintf("Reverted %s to version %d's values as version %d; %d Envoys acknowledged it.", env, version, answer.Version, len(answer.AckedBy)))
	default:
		v.Set("failed", "1")
		v.Set("flash", fmt.Sprintf("Reverting %s to version %d: %d %s", env, version, rec.code, cmp.Or(answer.Error, rec.body.String())))
	}
	c.cfg.Log.Info("settings reverted from the console", "environment", env, "to_values_of", version, "status", rec.code, "new_version", answer.Version)
	http.Redirect(w, r, "/ui/loadbalancer?"+v.Encode(), http.StatusSeeOther)
}

// recorder keeps an in-process answer of the settings API.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}
