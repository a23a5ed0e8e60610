"""Schemathesis hooks of tests/openapi_test.go.

Each keeps generated requests within a rule that a schema cannot state, and
touches only values that are valid by the schema, so a negative case stays
negative. The refusals themselves are tested by the packages' own tests.
"""

import base64
import zlib
from datetime import datetime, timedelta, timezone

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = (case.operation.method.upper(), case.operation.path)
    if operation == ("POST", "/metrics"):
        _received_in_the_past(case)
    elif operation == ("GET", "/proxy/logs"):
        _cursor_issued_by_the_api(case)
    elif operation == ("GET", "/autoscalers/{namespace}/{name}/decisions"):
        _no_cursor(case)
    elif operation == ("GET", "/reports"):
        _period_or_since(case)


def _no_cursor(case):
    """The decision log's cursor is opaque too, and a fresh autoscaler has
    no second page to take one from: a generated one is left out."""
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)


def _period_or_since(case):
    """A report covers a period or starts at since, not both: with both,
    the period is left out."""
    if isinstance(case.query, dict) and "since" in case.query:
        case.query.pop("period", None)


def _received_in_the_past(case):
    """The server refuses samples taken more than 5 s ahead of its clock; a
    generated date-time lies anywhere up to year 9999. Future ones move to
    an hour ago."""
    samples = case.body if isinstance(case.body, list) else [case.body]
    now = datetime.now(timezone.utc)
    for sample in samples:
        if not isinstance(sample, dict) or not isinstance(sample.get("receivedAt"), str):
            continue
        try:
            taken = datetime.fromisoformat(sample["receivedAt"])
        except ValueError:
            continue
        if taken.tzinfo is not None and taken > now:
            sample["receivedAt"] = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


def _cursor_issued_by_the_api(case):
    """A cursor is opaque: only one the API issued (in a Link header) is
    accepted. In a positive case the generated one becomes a cursor of the
    API's form, a position derived from the generated text."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not case.query:
        return
    cursor = case.query.get("cursor")
    if not isinstance(cursor, str):
        return
    n = zlib.crc32(cursor.encode())
    micros = int(datetime.now(timezone.utc).timestamp() * 1e6) - n
    position = f"{micros}.{n % 1000 + 1}".encode()
    case.query["cursor"] = base64.urlsafe_b64encode(position).rstrip(b"=").decode()
