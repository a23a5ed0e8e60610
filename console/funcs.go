package console

import (
	"fmt"
	"html/template"
	"time"
)

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"pct": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return fmt.Sprintf("%.1f%%", *v*100)
	},
	// le shows a latency bucket's upper edge.
	"le": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return fmt.Sprintf("≤ %.0f ms", *v)
	},
	"num": func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"optnum": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return fmt.Sprintf("%.4g", *v)
	},
	// seconds shows a duration given in seconds, to the second.
	"seconds": func(v *float64) string {
		if v == nil {
			return "—"
		}
		return (time.Duration(*v * float64(time.Second))).Round(time.Second).String()
	},
	"optint": func(v *int32) string {
		if v == nil {
			return "—"
		}
		return fmt.Sprint(*v)
	},
	"wakeStages": wakeStages,
	"stateClass": func(s string) string {
		switch s {
		case StateError:
			return "bad"
		case StateScalingUp, StateScalingDown, StateWaking, StateAtMax:
			return "busy"
		}
		return "ok"
	},
}
