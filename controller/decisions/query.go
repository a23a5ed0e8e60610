package decisions

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nemesis-ml/nemesis/controller/api/v1alpha1"
	"github.com/nemesis-ml/nemesis/controller/rules"
	"github.com/nemesis-ml/nemesis/internal/keyset"
	"github.com/nemesis-ml/nemesis/internal/validation"
)

// Limits of a page.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Query is a validated GET /autoscalers/{namespace}/{name}/decisions.
type Query struct {
	Namespace, Name string
	Since, Until    time.Time // zero: unbounded; Since inclusive, Until exclusive
	Action          string
	Rule            string
	// LimitedBy is a limit's name, "any" for every limited record, or empty.
	LimitedBy string
	DryRun    *bool
	// Changed keeps only records whose replica count changed (true) or
	// stayed (false).
	Changed *bool
	Limit   int
	After   *Cursor
}

// Cursor is the last row of a page: the next page starts below it.
type Cursor = keyset.Cursor

// Parse validates the query string; errors are *validation.FieldError
// naming the parameter.
func Parse(namespace, name string, v url.Values) (Query, error) {
	q := Query{Namespace: namespace, Name: name, Limit: DefaultLimit}
	bad := func(field, format string, args ...any) (Query, error) {
		return Query{}, &validation.FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	boolean := func(name, value string) (*bool, error) {
		b, err := strconv.ParseBool(value)
		if err != nil {
			return nil, &validation.FieldError{Field: name, Message: "must be true or false"}
		}
		return &b, nil
	}
	for key, values := range v {
		if len(values) != 1 {
			return bad(key, "must be given once")
		}
		value := values[0]
		var err error
		switch key {
		case "since", "until":
			t, perr := time.Parse(time.RFC3339Nano, value)
			if perr != nil {
				return bad(key, "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
			}
			if key == "since" {
				q.Since = t.UTC()
			} else {
				q.Until = t.UTC()
			}
		// The filters name what records can hold: anything else would
		// match nothing, or (a NUL byte) fail in PostgreSQL.
		case "action":
			if !slices.Contains(actions, value) {
				return bad(key, "must be one of %s", strings.Join(actions, ", "))
			}
			q.Action = value
		case "rule":
			if len(value) > 63 || !ruleID.MatchString(value) {
				return bad(key, "must be a rule id: lower-case letters, digits and '-', at most 63")
			}
			q.Rule = value
		case "limited_by":
			if !slices.Contains(limits, value) {
				return bad(key, "must be one of %s", strings.Join(limits, ", "))
			}
			q.LimitedBy = value
		case "dry_run":
			q.DryRun, err = boolean(key, value)
		case "changed":
			q.Changed, err = boolean(key, value)
		case "limit":
			n, perr := strconv.Atoi(value)
			if perr != nil || n < 1 || n > MaxLimit {
				return bad(key, "must be between 1 and %d", MaxLimit)
			}
			q.Limit = n
		case "cursor":
			c, perr := keyset.Decode(value)
			if perr != nil {
				return bad(key, "is not a cursor this API returned")
			}
			q.After = c
		default:
			return bad(key, "unknown parameter")
		}
		if err != nil {
			return Query{}, err
		}
	}
	// until at or before since is an empty window, as in GET /proxy/logs.
	return q, nil
}

// What a record's action, rule and limit can be.
var (
	actions = []string{
		string(v1alpha1.ActionIncreaseInstances), string(v1alpha1.ActionDecreaseInstances),
		string(v1alpha1.ActionDecreaseInstancesToZero), rules.ActionHold,
	}
	ruleID = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	limits = []string{
		"any", rules.LimitMinReplicas, rules.LimitMaxReplicas, rules.LimitStabilization,
		rules.LimitIdlePeriod, rules.LimitStaleMetrics, LimitDryRun,
	}
)

var columns = "id, namespace, name, time, from_replicas, to_replicas, action, rule, reason, limited_by, dry_run, inputs, wake"

// SQL returns the statement and arguments selecting the page, newest
// first, plus one record to tell whether another page follows.
func (q Query) SQL() (string, []any) {
	args := []any{q.Namespace, q.Name}
	where := []string{"namespace = $1", "name = $2"}
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if !q.Since.IsZero() {
		add("time >= $?", q.Since)
	}
	if !q.Until.IsZero() {
		add("time < $?", q.Until)
	}
	if q.Action != "" {
		add("action = $?", q.Action)
	}
	if q.Rule != "" {
		add("rule = $?", q.Rule)
	}
	switch q.LimitedBy {
	case "":
	case "any":
		where = append(where, "limited_by <> ''")
	default:
		add("limited_by = $?", q.LimitedBy)
	}
	if q.DryRun != nil {
		add("dry_run = $?", *q.DryRun)
	}
	if q.Changed != nil {
		if *q.Changed {
			where = append(where, "to_replicas <> from_replicas")
		} else {
			where = append(where, "to_replicas = from_replicas")
		}
	}
	if q.After != nil {
		args = append(args, q.After.Time, q.After.ID)
		t, id := len(args)-1, len(args)
		where = append(where, fmt.Sprintf("time <= $%d AND (time < $%d OR id < $%d)", t, t, id))
	}
	args = append(args, q.Limit+1)
	return fmt.Sprintf("SELECT %s FROM scaling_decisions WHERE %s ORDER BY time DESC, id DESC LIMIT $%d",
		columns, strings.Join(where, " AND "), len(args)), args
}
