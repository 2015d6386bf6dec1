"""Schemathesis hooks of ./scripts/schemathesis: the rules of readstate's API that
its OpenAPI document cannot state in JSON Schema, and what a stateful heuristic
cannot know about them. See docs/HARDENING.md, section "Schemathesis".
"""

import atexit
import sys
from collections import Counter, deque

import schemathesis

# Every call of the run, oldest first (the stateful phase runs one scenario at a
# time: `--workers 1`): (method, path template, path parameters, body, status, reply).
_CALLS = deque(maxlen=50_000)

# Failures dropped by `filter_failure`, by reason, printed at the end of the run.
_DROPPED = Counter()


@atexit.register
def _report_dropped():
    if _DROPPED:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(_DROPPED.items()))
        print(f"scripts/schemathesis.d/hooks.py dropped: {reasons}", file=sys.stderr)


def _canonical(value):
    """`value` with every integral float (`42.0`) written as an integer (`42`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


@schemathesis.hook
def map_case(context, case):
    """Ids and timestamps are JSON integers written without a fraction: the service
    refuses `42.0` (an id above 2^53 written as a float has already lost digits), but
    JSON Schema's `integer` includes it, so generated bodies are given the one spelling
    the API documents. The value is the same, so a case stays as valid or invalid as it
    was generated."""
    if isinstance(case.body, (dict, list)):
        case.body = _canonical(case.body)
    return case


def _id(value):
    """An id as the service reads it, from a path parameter or a body field."""
    if isinstance(value, bool) or value is None:
        return None
    return str(value)


@schemathesis.hook
def after_call(context, case, response):
    try:
        reply = response.json()
    except Exception:  # noqa: BLE001 - not JSON (or no body): nothing to read
        reply = None
    body = case.body if isinstance(case.body, (dict, list)) else None
    _CALLS.append(
        (
            case.operation.method.upper(),
            case.operation.path,
            {k: _id(v) for k, v in (case.path_parameters or {}).items()},
            body,
            response.status_code,
            reply,
        )
    )


def _recreates(call, user, channel):
    """Whether `call` (a successful write) creates the read state (`user`, `channel`):
    join, ack and mark unread create it, and so does a message the user wrote or is
    mentioned in, by themselves or as ops of a batch."""
    method, path, params, body, status, reply = call
    if not 200 <= status < 300:
        return False
    if path in (
        "/v1/users/{user_id}/channels/{channel_id}",
        "/v1/users/{user_id}/channels/{channel_id}/ack",
        "/v1/users/{user_id}/channels/{channel_id}/unread",
    ):
        return method in ("PUT", "POST") and params.get("user_id") == user and params.get("channel_id") == channel
    if method == "POST" and path == "/v1/channels/{channel_id}/messages" and isinstance(body, dict):
        return params.get("channel_id") == channel and _writes_or_mentions(body, user)
    if method == "POST" and path == "/v1/batch" and isinstance(body, dict) and isinstance(reply, dict):
        ops = body.get("ops") or []
        results = reply.get("results") or []
        for op, result in zip(ops, results):
            if not (isinstance(op, dict) and isinstance(result, dict) and result.get("ok")):
                continue
            if _id(op.get("channel_id")) != channel:
                continue
            if op.get("op") in ("join", "ack", "unread") and _id(op.get("user_id")) == user:
                return True
            if op.get("op") == "message_created" and _writes_or_mentions(op, user):
                return True
    return False


def _writes_or_mentions(message, user):
    mentions = message.get("mentions") or []
    return _id(message.get("author_id")) == user or user in [_id(m) for m in mentions]


def _recreated_since_leave(user, channel):
    """Whether the read state was created again after the last time it was left."""
    calls = list(_CALLS)
    for i in range(len(calls) - 1, -1, -1):
        method, path, params, _, status, _ = calls[i]
        # Deleting the user leaves every channel at once.
        left = (
            path == "/v1/users/{user_id}/channels/{channel_id}"
            and params.get("channel_id") == channel
        ) or path == "/v1/users/{user_id}"
        if (
            method == "DELETE"
            and left
            and params.get("user_id") == user
            and 200 <= status < 300
        ):
            return any(_recreates(call, user, channel) for call in calls[i + 1 :])
    return False


def _empty_user_answer(reply):
    """Whether `reply` is what a user without read states gets: no read state in
    it, every count zero."""
    if not isinstance(reply, dict):
        return False
    for key, value in reply.items():
        if key in ("read_states", "groups") and value:
            return False
        if key in ("unread_channels", "unread_threads", "mentions") and value != 0:
            return False
    return True


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Drops the failures that are the API's documented behaviour, and only those."""
    method = case.operation.method.upper()
    path = case.operation.path
    code = getattr(failure, "code", None)
    # `POST /v1/batch` refuses a bad op in its results, not with a 400: the request is
    # answered 200 and that op's result is `{"ok": false, "error": {problem}}` while
    # the other ops apply (a bad op fails alone, as on gRPC and NATS). So a body that
    # violates the schema inside `ops` is refused exactly when some result is not ok.
    if code == "ST201" and method == "POST" and path == "/v1/batch":
        if response.status_code != 200:
            return True
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            return True
        if any(isinstance(r, dict) and r.get("ok") is False for r in results):
            _DROPPED["batches that refused the bad op in its result"] += 1
            return False
        return True
    # A parent is refused when it is the channel itself or a descendant of it (a
    # cycle), which JSON Schema cannot compare (a body field against the path, or
    # against the parents already set): a 400 naming `parent_id` for that reason.
    if code == "ST202" and method == "PUT" and path == "/v1/channels/{channel_id}":
        try:
            problem = response.json()
        except ValueError:
            return True
        detail = str(problem.get("detail", "")) if isinstance(problem, dict) else ""
        if (
            response.status_code == 400
            and problem.get("field") == "parent_id"
            and ("itself" in detail or "cycle" in detail or "deeper" in detail)
        ):
            _DROPPED["parents that would form a cycle"] += 1
            return False
        return True
    if code == "ST301" and method == "GET":
        # A user is not a resource: after `DELETE /v1/users/{user_id}` the user reads
        # as one with no read state (empty lists, zero counts), as any user never
        # seen does. An answer holding a read state is still a failure (unless the
        # state was created again: the rule below).
        if path.startswith("/v1/users/{user_id}") and path != "/v1/users/{user_id}/channels/{channel_id}":
            try:
                reply = response.json()
            except ValueError:
                return True
            if _empty_user_answer(reply):
                _DROPPED["reads of a deleted user, who has no read state"] += 1
                return False
        # Read receipts are a query by read position (the users at or past a message
        # id), answered for any message, deleted or never seen: never 404.
        if path == "/v1/channels/{channel_id}/messages/{message_id}/readers":
            _DROPPED["read receipts of a deleted message or channel"] += 1
            return False
        # A read state that was left is created again by a later join, ack, mark
        # unread, or message written by or mentioning the user: the heuristic only
        # counts writes to the same path. A read state still there without one is a
        # real failure.
        if path == "/v1/users/{user_id}/channels/{channel_id}":
            params = {k: _id(v) for k, v in (case.path_parameters or {}).items()}
            if _recreated_since_leave(params.get("user_id"), params.get("channel_id")):
                _DROPPED["read states created again after a leave"] += 1
                return False
    return True
