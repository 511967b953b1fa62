#!/usr/bin/env python3
"""A stand-in for an MLflow 2.10.2 tracking server, for kiln's push tests and benchmark.

It answers the REST endpoints kiln uses the way the real server does (status codes,
error codes and messages, JSON shapes and formatting, limits, quirks), as recorded in
tests/mlflow/transcripts/ and checked by tests/mlflow/check_conformance.py. State is
kept in memory. On top of MLflow it injects faults on demand (503, 429, 500, dropped
connections before or after processing, slow answers) and counts requests, bytes and
connections, through control endpoints under /__kiln_test__/. See README.md here.

Request parsing imitates MLflow's: the JSON body is parsed leniently (invalid JSON is
{} except for runs/log-batch, which fails with a 500 HTML page), then converted the
way protobuf's ParseDict does it, field by field in the body's order, stopping at the
first field it cannot convert and keeping what it converted before (so a bare NaN
stores a metric as 0.0 at timestamp 0, and an unknown run status changes nothing),
then checked against the handler's schema. Python standard library only.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import http
import http.server
import json
import math
import mimetypes
import os
import posixpath
import random
import re
import signal
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

MLFLOW_VERSION = "2.10.2"
CONTROL_PREFIX = "/__kiln_test__/"
API = "/api/2.0/mlflow/"
ARTIFACTS_PROXY = "/api/2.0/mlflow-artifacts/artifacts"
# Where the real server kept artifacts; shown in error messages as in the transcripts.
ARTIFACT_ROOT_LABEL = "<DATA_DIR>/artifacts"
FAULT_KINDS = ("503", "429", "500", "drop", "drop-after", "slow")
DEFAULT_FAULT_KINDS = ("503", "429", "500", "drop", "drop-after")
MAX_FLOAT = 1.7976931348623157e308

HTML_404 = (
    "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    "<p>The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again.</p>\n"
)
HTML_405 = (
    "<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n"
    "<h1>Method Not Allowed</h1>\n<p>The method is not allowed for the requested URL.</p>\n"
)
HTML_500 = (
    "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    "<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    "unable to complete your request. Either the server is overloaded or there is an error "
    "in the application.</p>\n"
)
UNAUTHENTICATED = (
    "You are not authenticated. Please see "
    "https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
    "on how to authenticate."
)
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"

ERROR_STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "INTERNAL_ERROR": 500,
}


class MlflowError(Exception):
    """An MlflowException: answered as JSON {"error_code", "message"}."""

    def __init__(self, message, error_code="INVALID_PARAMETER_VALUE"):
        super().__init__(message)
        self.message = message
        self.error_code = error_code


class InternalServerError(Exception):
    """An exception MLflow does not catch: Flask answers 500 with an HTML page."""


class Response:
    def __init__(self, status, body=b"", content_type=JSON_TYPE, headers=(), chunked=False):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.chunked = chunked


def pretty(obj):
    """MLflow's message_to_json: json.dumps(..., indent=2)."""
    return json.dumps(obj, indent=2)


def json_response(obj):
    return Response(200, pretty(obj).encode())


def error_response(error):
    body = json.dumps({"error_code": error.error_code, "message": error.message})
    return Response(ERROR_STATUS.get(error.error_code, 500), body.encode())


def html_response(status, page, headers=()):
    return Response(status, page.encode(), HTML_TYPE, headers)


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# protobuf's ParseDict, as far as MLflow's request messages need it

STRING, INT64, INT32, DOUBLE = "string", "int64", "int32", "double"
RUN_STATUS = ("enum", {"RUNNING": 1, "SCHEDULED": 2, "FINISHED": 3, "FAILED": 4, "KILLED": 5})
VIEW_TYPE = ("enum", {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3})
RUN_STATUS_NAMES = {v: k for k, v in RUN_STATUS[1].items()}


def repeated(inner):
    return ("repeated", inner)


KEY_VALUE = {"key": STRING, "value": STRING}
METRIC = {"key": STRING, "value": DOUBLE, "timestamp": INT64, "step": INT64}
MESSAGES = {
    "CreateExperiment": {"name": STRING, "artifact_location": STRING, "tags": repeated(KEY_VALUE)},
    "GetExperiment": {"experiment_id": STRING},
    "GetExperimentByName": {"experiment_name": STRING},
    "SearchExperiments": {
        "max_results": INT64,
        "page_token": STRING,
        "filter": STRING,
        "order_by": repeated(STRING),
        "view_type": VIEW_TYPE,
    },
    "CreateRun": {
        "experiment_id": STRING,
        "user_id": STRING,
        "run_name": STRING,
        "start_time": INT64,
        "tags": repeated(KEY_VALUE),
    },
    "GetRun": {"run_id": STRING, "run_uuid": STRING},
    "UpdateRun": {
        "run_id": STRING,
        "run_uuid": STRING,
        "status": RUN_STATUS,
        "end_time": INT64,
        "run_name": STRING,
    },
    "DeleteRun": {"run_id": STRING},
    "RestoreRun": {"run_id": STRING},
    "LogBatch": {
        "run_id": STRING,
        "metrics": repeated(METRIC),
        "params": repeated(KEY_VALUE),
        "tags": repeated(KEY_VALUE),
    },
    "LogMetric": {
        "run_id": STRING,
        "run_uuid": STRING,
        "key": STRING,
        "value": DOUBLE,
        "timestamp": INT64,
        "step": INT64,
    },
    "LogParam": {"run_id": STRING, "run_uuid": STRING, "key": STRING, "value": STRING},
    "SetTag": {"run_id": STRING, "run_uuid": STRING, "key": STRING, "value": STRING},
    "DeleteTag": {"run_id": STRING, "key": STRING},
    "SearchRuns": {
        "experiment_ids": repeated(STRING),
        "filter": STRING,
        "run_view_type": VIEW_TYPE,
        "max_results": INT32,
        "order_by": repeated(STRING),
        "page_token": STRING,
    },
    "GetMetricHistory": {
        "run_id": STRING,
        "run_uuid": STRING,
        "metric_key": STRING,
        "page_token": STRING,
        "max_results": INT32,
    },
    "ListArtifacts": {"run_id": STRING, "run_uuid": STRING, "path": STRING, "page_token": STRING},
    "ListArtifactsProxy": {"path": STRING},
}


class _ParseError(Exception):
    pass


def _convert_scalar(value, ftype):
    if ftype == STRING:
        if not isinstance(value, str):
            raise _ParseError()
        return value
    if ftype in (INT64, INT32):
        if isinstance(value, bool):
            raise _ParseError()
        if isinstance(value, float):
            if not value.is_integer():
                raise _ParseError()
            value = int(value)
        elif isinstance(value, str):
            if " " in value:
                raise _ParseError()
            try:
                value = int(value)
            except ValueError:
                raise _ParseError() from None
        elif not isinstance(value, int):
            raise _ParseError()
        bits = 63 if ftype == INT64 else 31
        if not -(2**bits) <= value < 2**bits:
            raise _ParseError()
        return value
    if ftype == DOUBLE:
        if isinstance(value, bool):
            raise _ParseError()
        if isinstance(value, float):
            # Bare NaN / Infinity tokens: "use quoted "NaN" instead".
            if math.isnan(value) or math.isinf(value):
                raise _ParseError()
            return value
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:
                raise _ParseError() from None
        if isinstance(value, str):
            if value == "nan":
                raise _ParseError()
            try:
                return float(value)
            except ValueError:
                raise _ParseError() from None
        raise _ParseError()
    if isinstance(ftype, tuple) and ftype[0] == "enum":
        names = ftype[1]
        if isinstance(value, str) and value in names:
            return names[value]
        if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
            return value
        raise _ParseError()
    raise AssertionError(ftype)


def _parse_into(js, fields, out):
    if not isinstance(js, dict):
        raise _ParseError()
    for name, value in js.items():
        ftype = fields.get(name)
        if ftype is None:  # ignore_unknown_fields=True
            continue
        if value is None:
            out.pop(name, None)
            continue
        if isinstance(ftype, tuple) and ftype[0] == "repeated":
            if not isinstance(value, list):
                raise _ParseError()
            items = out[name] = []
            inner = ftype[1]
            for item in value:
                if item is None:
                    raise _ParseError()
                if isinstance(inner, dict):
                    sub = {}
                    items.append(sub)
                    _parse_into(item, inner, sub)
                else:
                    items.append(_convert_scalar(item, inner))
        else:
            out[name] = _convert_scalar(value, ftype)


def parse_message(js, message):
    """Returns (fields set, whether parsing succeeded); on failure the fields converted
    before the failing one are kept, as protobuf leaves a partially parsed message."""
    # mlflow's parse_dict first turns integer experiment ids into strings.
    if isinstance(js, dict):
        if isinstance(js.get("experiment_id"), int):
            js["experiment_id"] = str(js["experiment_id"])
        if isinstance(js.get("experiment_ids"), list):
            js["experiment_ids"] = [str(x) if isinstance(x, int) else x for x in js["experiment_ids"]]
    out = {}
    try:
        _parse_into(js, MESSAGES[message], out)
    except _ParseError:
        return out, False
    return out, True


# The handlers' schema checks (mlflow/server/handlers.py). Type checks are skipped when
# protobuf parsing succeeded; an AssertionError becomes a 400, anything else a 500.
def _assert_required(x):
    assert x is not None
    assert x != ""


def _assert_string(x):
    assert isinstance(x, str)


def _assert_intlike(x):
    try:
        x = int(x)
    except ValueError:
        pass
    assert isinstance(x, int)


def _assert_floatlike(x):
    try:
        x = float(x)
    except ValueError:
        pass
    assert isinstance(x, float)


def _assert_array(x):
    assert isinstance(x, list)


def _assert_item_type_string(x):
    assert all(isinstance(item, str) for item in x)


def _assert_at_most_50000(x):
    assert x <= 50000


def _assert_metrics_fields_present(metrics):
    for m in metrics:
        _assert_required(m.get("key"))
        _assert_required(m.get("value"))
        _assert_required(m.get("timestamp"))


def _assert_keys_present(params_or_tags):
    for p in params_or_tags:
        _assert_required(p.get("key"))


_TYPE_CHECKS = {_assert_string, _assert_intlike, _assert_floatlike, _assert_array, _assert_item_type_string}


def _validate_schema(js, schema, proto_ok):
    for key, checks in schema:
        if key in js or _assert_required in checks:
            value = js.get(key)
            if key == "run_id" and value is None and "run_uuid" in js:
                value = js.get("run_uuid")
            for check in checks:
                if check in _TYPE_CHECKS and proto_ok:
                    continue
                try:
                    check(value)
                except AssertionError:
                    if check is _assert_required:
                        message = f"Missing value for required parameter '{key}'."
                    else:
                        message = (
                            f"Invalid value {value} for parameter '{key}' supplied."
                            f" Hint: Value was of type '{type(value).__name__}'."
                        )
                    raise MlflowError(
                        message + " See the API docs for more information about request parameters."
                    ) from None
                except Exception as e:
                    raise InternalServerError(repr(e)) from None


class Request:
    def __init__(self, method, path, query_string, headers, body):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.query = {}
        for k, v in urllib.parse.parse_qsl(query_string, keep_blank_values=True):
            self.query.setdefault(k, []).append(v)
        self.headers = headers
        self.body = body


def request_json(req):
    """_get_request_json: Content-Type check on POST/PUT, then get_json(force, silent)."""
    if req.method in ("POST", "PUT"):
        content_type = req.headers.get("Content-Type")
        if content_type is None:
            raise MlflowError("Bad Request. Content-Type header is missing.")
        if content_type.split(";")[0] not in ["application/json"]:
            raise MlflowError("Bad Request. Content-Type must be one of ['application/json'].")
    if not req.body:
        return None
    try:
        return json.loads(req.body)
    except (ValueError, RecursionError):
        return None


def request_message(req, message, schema=()):
    """_get_request_message: the query string for GETs that have one, else the JSON body."""
    fields = MESSAGES[message]
    if req.method in ("GET", "HEAD") and req.query_string:
        js = {}
        for name, ftype in fields.items():
            if name in req.query:
                is_list = isinstance(ftype, tuple) and ftype[0] == "repeated"
                js[name] = req.query[name] if is_list else req.query[name][0]
        msg, ok = parse_message(js, message)
        if not ok:
            raise InternalServerError("ParseError in query string")
        return msg
    js = request_json(req)
    if isinstance(js, str):  # double-encoded by old clients
        try:
            js = json.loads(js)
        except ValueError:
            raise InternalServerError("double-encoded body") from None
    if js is None:
        js = {}
    if not isinstance(js, dict):
        raise InternalServerError("body is not an object")
    msg, ok = parse_message(js, message)
    _validate_schema(js, schema, ok)
    return msg


# ---------------------------------------------------------------------------
# mlflow.utils.validation

MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 5000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
_VALID_NAME = re.compile(r"^[/\w.\- ]*$")
_RUN_ID_REGEX = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_BAD_CHARACTERS_MESSAGE = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.),"
    " spaces ( ), and slashes (/)."
)


def _path_not_unique(name):
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def _validate_name(kind, name):
    if name is None or not _VALID_NAME.match(name):
        raise MlflowError(f"Invalid {kind}: '{name}'. {_BAD_CHARACTERS_MESSAGE}")
    if _path_not_unique(name):
        raise MlflowError(
            f"Invalid {kind}: '{name}'. Names may be treated as files in certain cases, and must"
            " not resolve to other names when treated as such. This name would resolve to"
            f" '{posixpath.normpath(name)}'"
        )


def _validate_length(entity, limit, value):
    if value is not None and len(value) > limit:
        raise MlflowError(
            f"{entity} '{value[:250]}' had length {len(value)}, which exceeded length limit of {limit}"
        )


def validate_metric(key, value, timestamp, step):
    _validate_name("metric name", key)
    if timestamp < 0:
        raise MlflowError(
            f"Got invalid timestamp {timestamp} for metric '{key}' (value={value}). "
            "Timestamp must be a nonnegative long (64-bit integer) "
        )
    _validate_length("Metric name", MAX_ENTITY_KEY_LENGTH, key)


def validate_param(key, value):
    _validate_name("parameter name", key)
    _validate_length("Param key", MAX_ENTITY_KEY_LENGTH, key)
    _validate_length("Param value", MAX_PARAM_VAL_LENGTH, value)


def validate_tag(key, value):
    _validate_name("tag name", key)
    _validate_length("Tag key", MAX_ENTITY_KEY_LENGTH, key)
    _validate_length("Tag value", MAX_TAG_VAL_LENGTH, value)


def _validate_batch_limit(entity_name, limit, length):
    if length > limit:
        raise MlflowError(
            f"A batch logging request can contain at most {limit} {entity_name}. "
            f"Got {length} {entity_name}. Please split up {entity_name} across multiple"
            " requests and try again."
        )


def validate_path_is_safe(path):
    for _ in range(10):
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            break
        path = decoded
    bad = MlflowError("Invalid path")
    if (
        "#" in path
        or "\\" in path
        or ".." in path.split("/")
        or path.startswith("/")
        or (len(path) >= 2 and path[1] == ":")
    ):
        raise bad
    return path


def _page_offset(page_token):
    if not page_token:
        return 0
    try:
        decoded = base64.b64decode(page_token)
    except (binascii.Error, ValueError):
        raise MlflowError("Invalid page token, could not base64-decode") from None
    try:
        parsed = json.loads(decoded)
    except ValueError:
        raise MlflowError(f"Invalid page token, decoded value={decoded}") from None
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if not offset:
        raise MlflowError(f"Invalid page token, parsed value={parsed}")
    try:
        return int(offset)
    except ValueError:
        raise MlflowError(f"Invalid page token, not stringable {offset}") from None


def _page_token(offset):
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


# ---------------------------------------------------------------------------
# Search filters: clauses joined by AND, as MLflow's SearchUtils accepts them

_ENTITY_TYPES = {
    "attribute": "attribute", "attributes": "attribute", "attr": "attribute", "run": "attribute",
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "tag", "tags": "tag",
}  # fmt: skip
_RUN_ATTRIBUTES = {
    "run_id": "run_id", "run_name": "run_name", "run name": "run_name", "status": "status",
    "user_id": "user_id", "artifact_uri": "artifact_uri", "start_time": "start_time",
    "end_time": "end_time", "created": "start_time", "Created": "start_time",
}  # fmt: skip
_EXPERIMENT_ATTRIBUTES = {
    "name": "name", "experiment_id": "experiment_id",
    "creation_time": "creation_time", "last_update_time": "last_update_time",
}  # fmt: skip
_NUMERIC_ATTRIBUTES = {"start_time", "end_time", "creation_time", "last_update_time"}
_CLAUSE = re.compile(
    r"""\s*(?P<ident>(?:[A-Za-z_]+\.)?(?:`[^`]*`|"[^"]*"|[\w.\-/:]+))
        \s*(?P<op>!=|>=|<=|=|>|<|NOT\s+IN\b|IN\b|ILIKE\b|LIKE\b)
        \s*(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\([^)]*\)|[-+]?[0-9][0-9.eE+\-]*)\s*""",
    re.X | re.I,
)
_AND = re.compile(r"AND\b", re.I)
_VALUE_LIST_ITEM = re.compile(r"\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*(,|$)")


def _unquote(s):
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"`":
        return s[1:-1]
    return s


def _parse_identifier(ident, attributes, order_by=False):
    if ident[0] in "`\"":
        entity, key = "attribute", _unquote(ident)
    elif "." in ident and ident.split(".", 1)[0].lower() in _ENTITY_TYPES:
        prefix, key = ident.split(".", 1)
        entity, key = _ENTITY_TYPES[prefix.lower()], _unquote(key)
    elif "." in ident:
        raise MlflowError(
            f"Invalid entity type '{ident.split('.', 1)[0]}'. "
            f"Valid values are {sorted(set(_ENTITY_TYPES))}"
        )
    else:
        entity, key = "attribute", ident
    if entity == "attribute":
        if key not in attributes:
            raise MlflowError(
                f"Invalid attribute key '{key}' specified. Valid keys are '{sorted(set(attributes))}'"
            )
        key = attributes[key]
    return entity, key


def parse_filter(text, attributes):
    """Returns [(entity, key, comparator, value)]."""
    clauses = []
    pos = 0
    text = text or ""
    if not text.strip():
        return clauses
    while True:
        m = _CLAUSE.match(text, pos)
        if not m:
            raise MlflowError(f"Error on parsing filter '{text}'")
        entity, key = _parse_identifier(m.group("ident"), attributes)
        op = re.sub(r"\s+", " ", m.group("op").upper())
        raw = m.group("value")
        numeric = entity == "metric" or (entity == "attribute" and key in _NUMERIC_ATTRIBUTES)
        if op in ("IN", "NOT IN"):
            if not raw.startswith("(") or numeric:
                raise MlflowError(f"Error on parsing filter '{text}'")
            inner, values, p = raw[1:-1], [], 0
            while p < len(inner):
                item = _VALUE_LIST_ITEM.match(inner, p)
                if not item:
                    raise MlflowError(f"Error on parsing filter '{text}'")
                values.append(_unquote(item.group(1)))
                p = item.end()
            value = values
        elif numeric:
            if op in ("LIKE", "ILIKE") or raw[0] in "'\"(":
                if raw[0] in "'\"" and entity == "attribute":
                    # MLflow accepts quoted numbers for time attributes.
                    raw = _unquote(raw)
                else:
                    raise MlflowError(f"Error on parsing filter '{text}'")
            try:
                value = float(raw)
            except ValueError:
                raise MlflowError(f"Error on parsing filter '{text}'") from None
        else:
            if raw[0] not in "'\"" or op in (">", ">=", "<", "<="):
                raise MlflowError(f"Error on parsing filter '{text}'")
            value = _unquote(raw)
        clauses.append((entity, key, op, value))
        pos = m.end()
        if pos >= len(text):
            return clauses
        a = _AND.match(text, pos)
        if not a:
            raise MlflowError(f"Error on parsing filter '{text}'")
        pos = a.end()


def _like(pattern, value, ignore_case):
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S | (re.I if ignore_case else 0)) is not None


def _compare(op, actual, wanted):
    if actual is None:
        return False
    if op == "=":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    if op == ">":
        return actual > wanted
    if op == ">=":
        return actual >= wanted
    if op == "<":
        return actual < wanted
    if op == "<=":
        return actual <= wanted
    if op == "LIKE":
        return _like(wanted, actual, False)
    if op == "ILIKE":
        return _like(wanted, actual, True)
    if op == "IN":
        return actual in wanted
    if op == "NOT IN":
        return actual not in wanted
    return False


def parse_order_by(clauses, attributes):
    """Returns [(entity, key, ascending)]."""
    out = []
    for clause in clauses:
        m = re.fullmatch(
            r"\s*((?:[A-Za-z_]+\.)?(?:`[^`]*`|\"[^\"]*\"|[\w.\-/: ]+?))\s*(?:\s(ASC|DESC))?\s*",
            clause,
            re.I,
        )
        if not m:
            raise MlflowError(f"Invalid order_by clause '{clause}'. Could not be parsed.")
        entity, key = _parse_identifier(m.group(1), attributes)
        out.append((entity, key, (m.group(2) or "ASC").upper() == "ASC"))
    return out


def sort_entities(items, order, value_of):
    """Stable multi-key sort; entities lacking a value sort last in either direction."""
    items = list(items)
    for entity, key, ascending in reversed(order):
        present = [i for i in items if value_of(i, entity, key) is not None]
        missing = [i for i in items if value_of(i, entity, key) is None]
        present.sort(key=lambda i: value_of(i, entity, key), reverse=not ascending)
        items = present + missing
    return items


# ---------------------------------------------------------------------------
# The tracking store (SqlAlchemyStore's behaviour, in memory)

_PREDICATES = ["able", "bold", "brave", "calm", "clever", "eager", "fancy", "gentle", "happy",
               "jolly", "kind", "lively", "merry", "nimble", "proud", "quick", "silent", "witty"]
_NOUNS = ["ant", "bass", "bear", "crane", "deer", "eel", "finch", "fox", "goat", "hare", "lark",
          "mole", "owl", "ram", "seal", "swan", "toad", "wolf"]  # fmt: skip


class Run:
    def __init__(self, run_id, experiment_id, run_name, user_id, start_time, artifact_uri):
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.user_id = user_id
        self.status = "RUNNING"
        self.start_time = start_time
        self.end_time = None
        self.artifact_uri = artifact_uri
        self.lifecycle_stage = "active"
        self.deleted_time = None
        self.params = {}  # key -> value, in logging order
        self.tags = {}  # key -> value, in first-set order
        # Metric points (key, stored value, timestamp, step, is_nan) in logging order;
        # NaN is stored as 0.0 with is_nan, +/-Infinity clamped, as the SQL store does.
        self.metrics = []
        self.metric_set = set()
        self.latest = {}  # key -> point, in first-logged order

    def info(self):
        info = {
            "run_uuid": self.run_id,
            "experiment_id": self.experiment_id,
            "run_name": self.run_name,
            "user_id": self.user_id,
            "status": self.status,
            "start_time": self.start_time,
        }
        if self.end_time is not None:
            info["end_time"] = self.end_time
        info["artifact_uri"] = self.artifact_uri
        info["lifecycle_stage"] = self.lifecycle_stage
        info["run_id"] = self.run_id
        return info

    def data(self):
        data = {}
        if self.latest:
            data["metrics"] = [metric_json(p) for p in self.latest.values()]
        if self.params:
            data["params"] = [{"key": k, "value": v} for k, v in self.params.items()]
        if self.tags:
            data["tags"] = [{"key": k, "value": v} for k, v in self.tags.items()]
        return data

    def to_json(self, inputs=True):
        out = {"info": self.info(), "data": self.data()}
        if inputs:
            out["inputs"] = {}
        return out

    def attribute(self, key):
        return getattr(self, key)


def metric_json(point):
    key, value, timestamp, step, is_nan = point
    return {"key": key, "value": "NaN" if is_nan else value, "timestamp": timestamp, "step": step}


class Store:
    def __init__(self):
        self.experiments = {}  # id -> experiment dict, in creation order
        self.next_experiment_id = 0
        self.runs = {}  # run id -> Run, in creation order
        self.artifacts = {}  # normalized path under the artifact root -> bytes
        self._last_time = 0
        self._create_experiment("Default", "", [])

    def _time(self):
        # Strictly increasing, so creation order is also creation_time order.
        self._last_time = max(now_ms(), self._last_time + 1)
        return self._last_time

    # experiments

    def _create_experiment(self, name, artifact_location, tags):
        t = self._time()
        experiment_id = str(self.next_experiment_id)
        self.next_experiment_id += 1
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "name": name,
            "artifact_location": artifact_location or f"mlflow-artifacts:/{experiment_id}",
            "lifecycle_stage": "active",
            "last_update_time": t,
            "creation_time": t,
            "tags": {k: v for k, v in tags},
        }
        return experiment_id

    def create_experiment(self, name, artifact_location, tags):
        if not name:
            raise MlflowError(f"Invalid experiment name: '{name}'")
        for key, value in tags:
            validate_tag(key, value)
        if any(e["name"] == name for e in self.experiments.values()):
            t = now_ms()
            params = (name, artifact_location, "active", t, t)
            raise MlflowError(
                f"Experiment(name={name}) already exists. Error: (raised as a result of Query-invoked"
                " autoflush; consider using a session.no_autoflush block if this flush is occurring"
                " prematurely)\n(sqlite3.IntegrityError) UNIQUE constraint failed: experiments.name\n"
                "[SQL: INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time,"
                " last_update_time) VALUES (?, ?, ?, ?, ?)]\n"
                f"[parameters: {params!r}]\n"
                "(Background on this error at: https://sqlalche.me/e/14/gkpj)",
                "RESOURCE_ALREADY_EXISTS",
            )
        return self._create_experiment(name, artifact_location, tags)

    def get_experiment(self, experiment_id):
        experiment_id = experiment_id or "0"
        try:
            key = str(int(experiment_id))
        except ValueError:
            raise InternalServerError(f"int({experiment_id!r})") from None
        if key not in self.experiments:
            raise MlflowError(f"No Experiment with id={experiment_id} exists", "RESOURCE_DOES_NOT_EXIST")
        return self.experiments[key]

    def get_experiment_by_name(self, name):
        for e in self.experiments.values():
            if e["name"] == name:
                return e
        return None

    def search_experiments(self, view_type, max_results, order_by, filter_string, page_token):
        if max_results < 1:
            raise MlflowError(
                "Invalid value for parameter 'max_results' supplied. It must be a positive integer,"
                f" but got {max_results}"
            )
        if max_results > 50000:
            raise MlflowError(
                "Invalid value for parameter 'max_results' supplied. It must be at most 50000,"
                f" but got {max_results}"
            )
        clauses = parse_filter(filter_string, _EXPERIMENT_ATTRIBUTES)
        order = parse_order_by(order_by or ["creation_time DESC"], _EXPERIMENT_ATTRIBUTES)
        if ("attribute", "experiment_id") not in [(e, k) for e, k, _ in order]:
            order.append(("attribute", "experiment_id", True))
        stages = {1: {"active"}, 2: {"deleted"}, 3: {"active", "deleted"}}[view_type]

        def value_of(e, entity, key):
            if entity == "attribute":
                return int(e[key]) if key == "experiment_id" else e[key]
            if entity == "tag":
                return e["tags"].get(key)
            return None

        found = [
            e
            for e in self.experiments.values()
            if e["lifecycle_stage"] in stages
            and all(_compare(op, value_of(e, ent, key), val) for ent, key, op, val in clauses)
        ]
        found = sort_entities(found, order, value_of)
        offset = _page_offset(page_token)
        page = found[offset : offset + max_results]
        token = _page_token(offset + max_results) if len(found) > offset + max_results else None
        return page, token

    # runs

    def get_run(self, run_id):
        run = self.runs.get(run_id)
        if run is None:
            raise MlflowError(f"Run with id={run_id} not found", "RESOURCE_DOES_NOT_EXIST")
        return run

    @staticmethod
    def _check_active(run):
        if run.lifecycle_stage != "active":
            raise MlflowError(
                f"The run {run.run_id} must be in the 'active' state. "
                f"Current state is {run.lifecycle_stage}."
            )

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        experiment = self.get_experiment(experiment_id)
        if experiment["lifecycle_stage"] != "active":
            raise MlflowError(
                f"The experiment {experiment['experiment_id']} must be in the 'active' state. "
                f"Current state is {experiment['lifecycle_stage']}."
            )
        run_id = uuid.uuid4().hex
        artifact_uri = f"{experiment['artifact_location'].rstrip('/')}/{run_id}/artifacts"
        tags = list(tags)
        run_name_tag = next((v for k, v in tags if k == "mlflow.runName"), None)
        if run_name and run_name_tag and run_name != run_name_tag:
            raise MlflowError(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                f"different values (run_name='{run_name}', mlflow.runName='{run_name_tag}')."
            )
        run_name = run_name or run_name_tag or (
            f"{random.choice(_PREDICATES)}-{random.choice(_NOUNS)}-{random.randrange(1000)}"
        )
        if not run_name_tag:
            tags.append(("mlflow.runName", run_name))
        run = Run(run_id, experiment["experiment_id"], run_name, user_id, start_time, artifact_uri)
        for key, value in tags:
            run.tags[key] = value
        self.runs[run_id] = run
        return run

    def update_run(self, run_id, status, end_time, run_name):
        run = self.get_run(run_id)
        self._check_active(run)
        if status is not None:
            run.status = RUN_STATUS_NAMES[status]
        if end_time is not None:
            run.end_time = end_time
        if run_name:
            run.run_name = run_name
            run.tags["mlflow.runName"] = run_name
        return run

    def delete_run(self, run_id):
        run = self.get_run(run_id)
        run.lifecycle_stage = "deleted"
        run.deleted_time = now_ms()

    def restore_run(self, run_id):
        run = self.get_run(run_id)
        run.lifecycle_stage = "active"
        run.deleted_time = None

    @staticmethod
    def _log_metrics(run, metrics):
        for key, value, timestamp, step in metrics:
            is_nan = math.isnan(value)
            if is_nan:
                stored = 0.0
            elif math.isinf(value):
                stored = MAX_FLOAT if value > 0 else -MAX_FLOAT
            else:
                stored = value
            point = (key, stored, timestamp, step, is_nan)
            if point in run.metric_set:  # the metrics table's primary key
                continue
            run.metric_set.add(point)
            run.metrics.append(point)
            latest = run.latest.get(key)
            if latest is None or (step, timestamp, stored) > (latest[3], latest[2], latest[1]):
                run.latest[key] = point

    @staticmethod
    def _set_tag(run, key, value):
        if key == "mlflow.runName":
            run.run_name = value
        run.tags[key] = value

    def log_batch(self, run_id, metrics, params, tags):
        if _RUN_ID_REGEX.match(run_id) is None:
            raise MlflowError(f"Invalid run ID: '{run_id}'")
        for m in metrics:
            validate_metric(*m)
        for p in params:
            validate_param(*p)
        for t in tags:
            validate_tag(*t)
        _validate_batch_limit("metrics", MAX_METRICS_PER_BATCH, len(metrics))
        _validate_batch_limit("params", MAX_PARAMS_TAGS_PER_BATCH, len(params))
        _validate_batch_limit("tags", MAX_PARAMS_TAGS_PER_BATCH, len(tags))
        _validate_batch_limit(
            "metrics, params, and tags", MAX_ENTITIES_PER_BATCH, len(metrics) + len(params) + len(tags)
        )
        seen, dupes = [], []
        for key, _ in params:
            (dupes if key in seen else seen).append(key)
        if dupes:
            raise MlflowError(
                f"Duplicate parameter keys have been submitted: {dupes}. Please ensure "
                "the request contains only one param value per param key."
            )
        run = self.get_run(run_id)
        self._check_active(run)
        non_matching = [
            {"key": k, "old_value": run.params[k], "new_value": v}
            for k, v in params
            if k in run.params and run.params[k] != v
        ]
        if non_matching:
            raise MlflowError(
                "Changing param values is not allowed. Params were already"
                f" logged='{non_matching}' for run ID='{run_id}'."
            )
        for key, value in params:
            run.params.setdefault(key, value)
        self._log_metrics(run, metrics)
        for key, value in tags:
            self._set_tag(run, key, value)

    def log_metric(self, run_id, key, value, timestamp, step):
        validate_metric(key, value, timestamp, step)
        run = self.get_run(run_id)
        self._check_active(run)
        self._log_metrics(run, [(key, value, timestamp, step)])

    def log_param(self, run_id, key, value):
        validate_param(key, value)
        run = self.get_run(run_id)
        self._check_active(run)
        old = run.params.get(key)
        if old is not None and old != value:
            raise MlflowError(
                f"Changing param values is not allowed. Param with key='{key}' was already"
                f" logged with value='{old}' for run ID='{run_id}'. Attempted logging new"
                f" value '{value}'."
            )
        run.params[key] = value

    def set_tag(self, run_id, key, value):
        validate_tag(key, value)
        run = self.get_run(run_id)
        self._check_active(run)
        self._set_tag(run, key, value)

    def delete_tag(self, run_id, key):
        run = self.get_run(run_id)
        self._check_active(run)
        if key not in run.tags:
            raise MlflowError(
                f"No tag with name: {key} in run with id {run_id}", "RESOURCE_DOES_NOT_EXIST"
            )
        del run.tags[key]

    def metric_history(self, run_id, key):
        run = self.runs.get(run_id)  # the SQL store does not check that the run exists
        return [p for p in run.metrics if p[0] == key] if run else []

    def search_runs(self, experiment_ids, filter_string, view_type, max_results, order_by, page_token):
        if max_results > 50000:
            raise MlflowError(
                "Invalid value for request parameter max_results. It must be at "
                f"most 50000, but got value {max_results}"
            )
        clauses = parse_filter(filter_string, _RUN_ATTRIBUTES)
        order = parse_order_by(order_by, _RUN_ATTRIBUTES)
        if ("attribute", "start_time") not in [(e, k) for e, k, _ in order]:
            order.append(("attribute", "start_time", False))
        order.append(("attribute", "run_id", True))
        wanted = set()
        for eid in experiment_ids:
            try:
                wanted.add(str(int(eid)))
            except ValueError:
                wanted.add(eid)
        stages = {1: {"active"}, 2: {"deleted"}, 3: {"active", "deleted"}}[view_type]

        def value_of(run, entity, key):
            if entity == "attribute":
                return run.attribute(key)
            if entity == "param":
                return run.params.get(key)
            if entity == "tag":
                return run.tags.get(key)
            point = run.latest.get(key)
            if point is None:
                return None
            return math.nan if point[4] else point[1]

        found = [
            r
            for r in self.runs.values()
            if r.experiment_id in wanted
            and r.lifecycle_stage in stages
            and all(_compare(op, value_of(r, ent, key), val) for ent, key, op, val in clauses)
        ]
        found = sort_entities(found, order, value_of)
        offset = _page_offset(page_token)
        page = found[offset : offset + max_results]
        # As the SQL store does: a token whenever the page is full, even if nothing follows.
        token = _page_token(offset + max_results) if len(page) == max_results else None
        return page, token

    # artifacts (the proxy's local artifact repository)

    def _is_dir(self, path):
        prefix = path + "/" if path else ""
        return any(k.startswith(prefix) for k in self.artifacts)

    def put_artifact(self, path, data):
        key = posixpath.normpath(path)
        parts = key.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.artifacts:
                raise InternalServerError("NotADirectoryError")
        if self._is_dir(key):
            raise InternalServerError("IsADirectoryError")
        self.artifacts[key] = data

    def list_artifacts(self, path):
        directory = posixpath.normpath(path) if path else ""
        if directory == ".":
            directory = ""
        if directory in self.artifacts:
            return []
        prefix = directory + "/" if directory else ""
        children = {}
        for key, data in self.artifacts.items():
            if key.startswith(prefix):
                name, sep, _ = key[len(prefix) :].partition("/")
                if sep:
                    children[name] = None
                else:
                    children.setdefault(name, len(data))
        return [(name, children[name]) for name in sorted(children)]

    def dump(self):
        def artifact_entry(path, data):
            return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

        runs = []
        for run in self.runs.values():
            info = run.info()
            info["deleted_time"] = run.deleted_time
            entry = {
                "info": info,
                "params": [{"key": k, "value": v} for k, v in run.params.items()],
                "tags": [{"key": k, "value": v} for k, v in run.tags.items()],
                "metrics": [metric_json(p) for p in run.metrics],
                "latest_metrics": [metric_json(p) for p in run.latest.values()],
            }
            if run.artifact_uri.startswith("mlflow-artifacts:"):
                root = run.artifact_uri[len("mlflow-artifacts:") :].lstrip("/") + "/"
                entry["artifacts"] = [
                    artifact_entry(k[len(root) :], v)
                    for k, v in sorted(self.artifacts.items())
                    if k.startswith(root)
                ]
            runs.append(entry)
        experiments = []
        for e in self.experiments.values():
            e = dict(e)
            e["tags"] = [{"key": k, "value": v} for k, v in e["tags"].items()]
            experiments.append(e)
        return {
            "experiments": experiments,
            "runs": runs,
            "artifacts": [artifact_entry(k, v) for k, v in sorted(self.artifacts.items())],
        }


def experiment_json(e):
    out = {k: e[k] for k in ("experiment_id", "name", "artifact_location", "lifecycle_stage",
                             "last_update_time", "creation_time")}  # fmt: skip
    if e["tags"]:
        out["tags"] = [{"key": k, "value": v} for k, v in e["tags"].items()]
    return out


# ---------------------------------------------------------------------------
# Endpoint handlers; each runs under the store lock

TEXT_EXTENSIONS = {"txt", "log", "err", "cfg", "conf", "cnf", "cf", "ini", "properties", "prop",
                   "hocon", "toml", "yaml", "yml", "xml", "json", "js", "py", "py3", "csv", "tsv",
                   "md", "rst", "MLmodel", "MLproject"}  # fmt: skip


def _guess_mime_type(path):
    filename = posixpath.basename(path)
    extension = os.path.splitext(filename)[-1].replace(".", "") or filename
    if extension in TEXT_EXTENSIONS:
        return "text/plain"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _kv(items):
    return [(i.get("key", ""), i.get("value", "")) for i in items]


def h_health(store, req):
    return html_response(200, "OK")


def h_version(store, req):
    return html_response(200, MLFLOW_VERSION)


def h_create_experiment(store, req):
    msg = request_message(
        req,
        "CreateExperiment",
        [("name", [_assert_required, _assert_string]), ("artifact_location", [_assert_string]),
         ("tags", [_assert_array])],
    )  # fmt: skip
    experiment_id = store.create_experiment(
        msg.get("name", ""), msg.get("artifact_location", ""), _kv(msg.get("tags", []))
    )
    return json_response({"experiment_id": experiment_id})


def h_get_experiment(store, req):
    msg = request_message(req, "GetExperiment", [("experiment_id", [_assert_required, _assert_string])])
    return json_response({"experiment": experiment_json(store.get_experiment(msg.get("experiment_id", "")))})


def h_get_experiment_by_name(store, req):
    msg = request_message(
        req, "GetExperimentByName", [("experiment_name", [_assert_required, _assert_string])]
    )
    name = msg.get("experiment_name", "")
    experiment = store.get_experiment_by_name(name)
    if experiment is None:
        raise MlflowError(f"Could not find experiment with name '{name}'", "RESOURCE_DOES_NOT_EXIST")
    return json_response({"experiment": experiment_json(experiment)})


def h_search_experiments(store, req):
    msg = request_message(
        req,
        "SearchExperiments",
        [("view_type", [_assert_intlike]), ("max_results", [_assert_intlike]),
         ("order_by", [_assert_array]), ("filter", [_assert_string]),
         ("page_token", [_assert_string])],
    )  # fmt: skip
    page, token = store.search_experiments(
        msg.get("view_type", 1),
        msg.get("max_results", 1000),
        msg.get("order_by", []),
        msg.get("filter", ""),
        msg.get("page_token", ""),
    )
    out = {}
    if page:
        out["experiments"] = [experiment_json(e) for e in page]
    if token:
        out["next_page_token"] = token
    return json_response(out)


def h_create_run(store, req):
    msg = request_message(
        req,
        "CreateRun",
        [("experiment_id", [_assert_string]), ("start_time", [_assert_intlike]),
         ("run_name", [_assert_string])],
    )  # fmt: skip
    run = store.create_run(
        msg.get("experiment_id", ""),
        msg.get("user_id", ""),
        msg.get("start_time", 0),
        _kv(msg.get("tags", [])),
        msg.get("run_name", ""),
    )
    return json_response({"run": run.to_json(inputs=False)})


def _run_id(msg):
    return msg.get("run_id", "") or msg.get("run_uuid", "")


def h_get_run(store, req):
    msg = request_message(req, "GetRun", [("run_id", [_assert_required, _assert_string])])
    return json_response({"run": store.get_run(_run_id(msg)).to_json()})


def h_update_run(store, req):
    msg = request_message(
        req,
        "UpdateRun",
        [("run_id", [_assert_required, _assert_string]), ("end_time", [_assert_intlike]),
         ("status", [_assert_string]), ("run_name", [_assert_string])],
    )  # fmt: skip
    run = store.update_run(_run_id(msg), msg.get("status"), msg.get("end_time"), msg.get("run_name"))
    return json_response({"run_info": run.info()})


def h_delete_run(store, req):
    msg = request_message(req, "DeleteRun", [("run_id", [_assert_required, _assert_string])])
    store.delete_run(msg.get("run_id", ""))
    return json_response({})


def h_restore_run(store, req):
    msg = request_message(req, "RestoreRun", [("run_id", [_assert_required, _assert_string])])
    store.restore_run(msg.get("run_id", ""))
    return json_response({})


def h_log_batch(store, req):
    js = request_json(req)
    if js is None:
        # _validate_batch_log_api_req does len(None) on an unparsable body: a TypeError.
        raise InternalServerError("len(None)")
    msg = request_message(
        req,
        "LogBatch",
        [("run_id", [_assert_string, _assert_required]),
         ("metrics", [_assert_array, _assert_metrics_fields_present]),
         ("params", [_assert_array, _assert_keys_present]),
         ("tags", [_assert_array, _assert_keys_present])],
    )  # fmt: skip
    metrics = [
        (m.get("key", ""), m.get("value", 0.0), m.get("timestamp", 0), m.get("step", 0))
        for m in msg.get("metrics", [])
    ]
    store.log_batch(msg.get("run_id", ""), metrics, _kv(msg.get("params", [])), _kv(msg.get("tags", [])))
    return json_response({})


def h_log_metric(store, req):
    msg = request_message(
        req,
        "LogMetric",
        [("run_id", [_assert_required, _assert_string]), ("key", [_assert_required, _assert_string]),
         ("value", [_assert_required, _assert_floatlike]),
         ("timestamp", [_assert_intlike, _assert_required]), ("step", [_assert_intlike])],
    )  # fmt: skip
    store.log_metric(
        _run_id(msg), msg.get("key", ""), msg.get("value", 0.0), msg.get("timestamp", 0), msg.get("step", 0)
    )
    return json_response({})


def h_log_param(store, req):
    msg = request_message(
        req,
        "LogParam",
        [("run_id", [_assert_required, _assert_string]), ("key", [_assert_required, _assert_string]),
         ("value", [_assert_string])],
    )  # fmt: skip
    store.log_param(_run_id(msg), msg.get("key", ""), msg.get("value", ""))
    return json_response({})


def h_set_tag(store, req):
    msg = request_message(
        req,
        "SetTag",
        [("run_id", [_assert_required, _assert_string]), ("key", [_assert_required, _assert_string]),
         ("value", [_assert_string])],
    )  # fmt: skip
    store.set_tag(_run_id(msg), msg.get("key", ""), msg.get("value", ""))
    return json_response({})


def h_delete_tag(store, req):
    msg = request_message(
        req,
        "DeleteTag",
        [("run_id", [_assert_required, _assert_string]), ("key", [_assert_required, _assert_string])],
    )
    store.delete_tag(msg.get("run_id", ""), msg.get("key", ""))
    return json_response({})


def h_search_runs(store, req):
    msg = request_message(
        req,
        "SearchRuns",
        [("experiment_ids", [_assert_array]), ("filter", [_assert_string]),
         ("max_results", [_assert_intlike, _assert_at_most_50000]),
         ("order_by", [_assert_array, _assert_item_type_string])],
    )  # fmt: skip
    page, token = store.search_runs(
        msg.get("experiment_ids", []),
        msg.get("filter", ""),
        msg.get("run_view_type", 1),
        msg.get("max_results", 1000),
        msg.get("order_by", []),
        msg.get("page_token", ""),
    )
    out = {}
    if page:
        out["runs"] = [r.to_json() for r in page]
    if token:
        out["next_page_token"] = token
    return json_response(out)


def h_get_metric_history(store, req):
    msg = request_message(
        req,
        "GetMetricHistory",
        [("run_id", [_assert_string, _assert_required]), ("metric_key", [_assert_string, _assert_required])],
    )
    points = store.metric_history(_run_id(msg), msg.get("metric_key", ""))
    out = {}
    # MLflow 2.10.2's SQL store ignores max_results and page_token here and returns
    # everything; this server pages when max_results is given (a token only if more follow).
    max_results = msg.get("max_results", 0)
    token = None
    if max_results > 0:
        offset = _page_offset(msg.get("page_token", ""))
        if len(points) > offset + max_results:
            token = _page_token(offset + max_results)
        points = points[offset : offset + max_results]
    if points:
        out["metrics"] = [metric_json(p) for p in points]
    if token:
        out["next_page_token"] = token
    return json_response(out)


def _file_infos(entries, prefix=""):
    files = []
    for name, size in entries:
        info = {"path": posixpath.join(prefix, name) if prefix else name, "is_dir": size is None}
        if size is not None:
            info["file_size"] = size
        files.append(info)
    return files


def h_list_artifacts(store, req):
    msg = request_message(
        req,
        "ListArtifacts",
        [("run_id", [_assert_string, _assert_required]), ("path", [_assert_string]),
         ("page_token", [_assert_string])],
    )  # fmt: skip
    path = msg.get("path")
    if path is not None:
        path = validate_path_is_safe(path)
    run = store.get_run(_run_id(msg))
    out = {"root_uri": run.artifact_uri}
    parsed = urllib.parse.urlparse(run.artifact_uri)
    if parsed.scheme == "mlflow-artifacts":
        root = parsed.path.lstrip("/")
        destination = posixpath.join(root, path) if path is not None else root
        files = _file_infos(store.list_artifacts(destination), path or "")
        if files:
            out["files"] = files
    return json_response(out)


def h_proxy_list(store, req):
    msg = request_message(req, "ListArtifactsProxy")
    path = msg.get("path")
    if path:
        path = validate_path_is_safe(path)
    files = _file_infos(store.list_artifacts(path))
    return json_response({"files": files} if files else {})


def h_proxy_download(store, req, path):
    path = validate_path_is_safe(path)
    key = posixpath.normpath(path)
    if key in store.artifacts:
        headers = [
            ("Content-Disposition", f"attachment; filename={posixpath.basename(path)}"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return Response(200, store.artifacts[key], _guess_mime_type(path), headers, chunked=True)
    if store._is_dir(key):
        raise InternalServerError("IsADirectoryError")
    raise MlflowError(
        f"The following failures occurred while downloading one or more artifacts from "
        f"{ARTIFACT_ROOT_LABEL}:\n##### File {path} #####\n[Errno 2] No such file or directory: "
        f"'{ARTIFACT_ROOT_LABEL}/{path}'",
        "INTERNAL_ERROR",
    )


def h_proxy_upload(store, req, path):
    path = validate_path_is_safe(path)
    if not posixpath.basename(path):
        raise InternalServerError("IsADirectoryError")
    store.put_artifact(path, req.body)
    return json_response({})


def h_proxy_delete(store, req, path):
    path = validate_path_is_safe(path)
    key = posixpath.normpath(path)
    store.artifacts.pop(key, None)
    for k in [k for k in store.artifacts if k.startswith(key + "/")]:
        del store.artifacts[k]
    return json_response({})


ROUTES = {
    "/health": {"GET": h_health},
    "/version": {"GET": h_version},
    API + "experiments/create": {"POST": h_create_experiment},
    API + "experiments/get": {"GET": h_get_experiment},
    API + "experiments/get-by-name": {"GET": h_get_experiment_by_name},
    API + "experiments/search": {"GET": h_search_experiments, "POST": h_search_experiments},
    API + "runs/create": {"POST": h_create_run},
    API + "runs/get": {"GET": h_get_run},
    API + "runs/update": {"POST": h_update_run},
    API + "runs/delete": {"POST": h_delete_run},
    API + "runs/restore": {"POST": h_restore_run},
    API + "runs/log-batch": {"POST": h_log_batch},
    API + "runs/log-metric": {"POST": h_log_metric},
    API + "runs/log-parameter": {"POST": h_log_param},
    API + "runs/set-tag": {"POST": h_set_tag},
    API + "runs/delete-tag": {"POST": h_delete_tag},
    API + "runs/search": {"POST": h_search_runs},
    API + "metrics/get-history": {"GET": h_get_metric_history},
    API + "artifacts/list": {"GET": h_list_artifacts},
    ARTIFACTS_PROXY: {"GET": h_proxy_list},
}
PROXY_FILE_METHODS = {"GET": h_proxy_download, "PUT": h_proxy_upload, "DELETE": h_proxy_delete}


def _allow_header(methods):
    allowed = list(methods)
    if "GET" in allowed:
        allowed.append("HEAD")
    allowed.append("OPTIONS")
    return ", ".join(allowed)


def dispatch(store, req):
    """Routes a request as Flask would and runs its handler."""
    path = req.path.replace("/ajax-api/2.0/", "/api/2.0/", 1) if req.path.startswith("/ajax-api/") else req.path
    args = ()
    methods = ROUTES.get(path)
    if methods is None and path.startswith(ARTIFACTS_PROXY + "/") and len(path) > len(ARTIFACTS_PROXY) + 1:
        methods = PROXY_FILE_METHODS
        args = (path[len(ARTIFACTS_PROXY) + 1 :],)
    if methods is None:
        return html_response(404, HTML_404)
    method = "GET" if req.method == "HEAD" and "GET" in methods else req.method
    if method == "OPTIONS":
        return Response(200, b"", HTML_TYPE, [("Allow", _allow_header(methods))])
    handler = methods.get(method)
    if handler is None:
        return html_response(405, HTML_405, [("Allow", _allow_header(methods))])
    try:
        return handler(store, req, *args)
    except MlflowError as e:
        return error_response(e)
    except InternalServerError:
        return html_response(500, HTML_500)
    except Exception:  # a bug here; answered as Flask would answer an uncaught exception
        traceback.print_exc()
        return html_response(500, HTML_500)


# ---------------------------------------------------------------------------
# Fault injection, statistics, control endpoints


class Faults:
    def __init__(self, rate, kinds, seed, retry_after, slow_seconds, only=None, max_faults=None):
        self.rate = rate
        self.kinds = list(kinds)
        self.seed = seed
        self.rng = random.Random(seed)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.next = []  # kinds forced on the next matching requests, in order
        self.only = only  # a substring of "METHOD /path" that requests must contain
        self.remaining = max_faults  # None: unlimited

    def configure(self, body):
        """Applies a POST /__kiln_test__/faults body; fields left out keep their value."""
        kinds = body.get("kinds", self.kinds)
        nxt = body.get("next", self.next)
        for kind in list(kinds) + list(nxt):
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        rate = float(body.get("rate", self.rate))
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within 0..1")
        self.rate, self.kinds, self.next = rate, list(kinds), list(nxt)
        if "seed" in body:
            self.seed = body["seed"]
            self.rng = random.Random(self.seed)
        self.retry_after = float(body.get("retry_after", self.retry_after))
        self.slow_seconds = float(body.get("slow_seconds", self.slow_seconds))
        self.only = body.get("only", self.only)
        remaining = body.get("max", self.remaining)
        self.remaining = None if remaining is None else int(remaining)

    def describe(self):
        return {
            "rate": self.rate,
            "kinds": self.kinds,
            "seed": self.seed,
            "retry_after": self.retry_after,
            "slow_seconds": self.slow_seconds,
            "next": self.next,
            "only": self.only,
            "max": self.remaining,
        }

    def pick(self, endpoint):
        if self.only and self.only not in endpoint:
            return None
        if self.remaining is not None and self.remaining <= 0:
            return None
        if self.next:
            kind = self.next.pop(0)
        elif self.rate > 0 and self.kinds and self.rng.random() < self.rate:
            kind = self.rng.choice(self.kinds)
        else:
            return None
        if self.remaining is not None:
            self.remaining -= 1
        return kind

    def response(self, kind):
        retry = self.retry_after
        retry = str(int(retry)) if float(retry).is_integer() else str(retry)
        if kind == "503":
            body = b"503 Service Unavailable (fault injected by mlflow_test_server)\n"
            return Response(503, body, "text/plain; charset=utf-8", [("Retry-After", retry)])
        if kind == "429":
            body = json.dumps(
                {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "Too many requests (injected fault)."}
            )
            return Response(429, body.encode(), JSON_TYPE, [("Retry-After", retry)])
        body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "Internal error (injected fault)."})
        return Response(500, body.encode())


class Stats:
    def __init__(self):
        self.reset()

    def reset(self):
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections = 0
        self.faults = 0
        self.by_endpoint = {}
        self.by_status = {}
        self.by_fault = {}

    def describe(self):
        return {
            "requests": self.requests,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connections": self.connections,
            "faults": self.faults,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
        }


def endpoint_key(method, path):
    if path.startswith(ARTIFACTS_PROXY + "/"):
        path = ARTIFACTS_PROXY + "/*"
    return f"{method} {path}"


class App:
    def __init__(self, args):
        self.store = Store()
        self.store_lock = threading.Lock()
        self.stats = Stats()
        self.faults = Faults(
            args.fault_rate,
            args.faults.split(",") if args.faults else DEFAULT_FAULT_KINDS,
            args.seed,
            args.retry_after,
            args.slow_seconds,
            args.fault_only,
            args.fault_max,
        )
        self.lock = threading.Lock()  # stats and faults
        self.username = args.username
        self.password = args.password
        self.token = args.token
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None
        self.log_lock = threading.Lock()

    def authenticated(self, headers, path):
        if not (self.username or self.token) or path.startswith("/health"):
            return True
        value = headers.get("Authorization", "")
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "basic" and self.username is not None:
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(user, self.username) and hmac.compare_digest(password, self.password or "")
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(credentials.strip(), self.token)
        return False

    def log(self, method, path, status, fault):
        # Method, path (no query string), status and fault only: never headers or bodies.
        if self.log_file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = f"{stamp} {method} {path} {status}" + (f" fault={fault}" if fault else "") + "\n"
        with self.log_lock:
            self.log_file.write(line)
            self.log_file.flush()

    def control(self, method, path, body):
        """Test hooks: never faulted, never counted, never authenticated."""
        name = path[len(CONTROL_PREFIX) :]
        try:
            js = json.loads(body) if body else {}
        except ValueError:
            return Response(400, pretty({"error": "body is not JSON"}).encode())
        if name == "stats" and method == "GET":
            with self.lock:
                return json_response(self.stats.describe())
        if name == "reset-stats" and method == "POST":
            with self.lock:
                self.stats.reset()
            return json_response({})
        if name == "faults" and method in ("GET", "POST"):
            with self.lock:
                if method == "POST":
                    try:
                        self.faults.configure(js)
                    except (ValueError, TypeError) as e:
                        return Response(400, pretty({"error": str(e)}).encode())
                return json_response(self.faults.describe())
        if name == "dump" and method == "GET":
            with self.store_lock:
                return Response(200, json.dumps(self.store.dump(), indent=1).encode())
        if name == "reset-state" and method == "POST":
            with self.store_lock:
                self.store = Store()
            return json_response({})
        return Response(404, pretty({"error": f"no control endpoint {method} {path}"}).encode())


# ---------------------------------------------------------------------------
# HTTP


class _CountingReader:
    def __init__(self, raw):
        self.raw = raw
        self.count = 0

    @property
    def closed(self):
        return self.raw.closed

    def readline(self, *args):
        data = self.raw.readline(*args)
        self.count += len(data)
        return data

    def read(self, *args):
        data = self.raw.read(*args)
        self.count += len(data)
        return data

    def close(self):
        self.raw.close()


class _CountingWriter:
    def __init__(self, raw):
        self.raw = raw
        self.count = 0

    @property
    def closed(self):
        return self.raw.closed

    def write(self, data):
        self.count += len(data)
        return self.raw.write(data)

    def flush(self):
        self.raw.flush()

    def close(self):
        self.raw.close()


class _BadRequest(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlflow-test-server"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()
        self.rfile = _CountingReader(self.rfile)
        self.wfile = _CountingWriter(self.wfile)
        self._mark_in = 0
        self._mark_out = 0
        self._counted = False

    def log_message(self, *args):
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BadRequest() from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _BadRequest()
                body += chunk
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest() from None
        body = self.rfile.read(n) if n > 0 else b""
        if len(body) < n:
            raise _BadRequest()
        return body

    def _serialize(self, resp, head_only):
        reason = http.HTTPStatus(resp.status).phrase.upper()
        lines = [
            f"HTTP/1.1 {resp.status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
        ]
        if self.close_connection:
            lines.append("Connection: close")
        lines.extend(f"{k}: {v}" for k, v in resp.headers)
        body = resp.body
        if resp.chunked:
            lines.append("Transfer-Encoding: chunked")
            lines.append(f"Content-Type: {resp.content_type}")
            if body:
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            else:
                body = b"0\r\n\r\n"
        else:
            lines.append(f"Content-Type: {resp.content_type}")
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + body

    def _send(self, blob):
        try:
            self.wfile.write(blob)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _serve(self):
        app = self.server.app
        method = self.command
        target = self.path
        path, _, query = target.partition("?")
        route_path = urllib.parse.unquote(path)
        try:
            body = self._read_body()
        except (_BadRequest, OSError):
            body = None
        control = route_path.startswith(CONTROL_PREFIX)
        endpoint = endpoint_key(method, route_path)

        if body is None:
            self.close_connection = True
            resp, fault = html_response(400, "Bad Request\n"), None
        elif control:
            resp, fault = app.control(method, route_path, body), None
        else:
            with app.lock:
                fault = app.faults.pick(endpoint)
            resp = None
            if fault in ("503", "429", "500"):
                with app.lock:
                    resp = app.faults.response(fault)
            elif fault != "drop":
                if not app.authenticated(self.headers, route_path):
                    resp = Response(
                        401, UNAUTHENTICATED.encode(), HTML_TYPE, [("WWW-Authenticate", 'Basic realm="mlflow"')]
                    )
                else:
                    req = Request(method, route_path, query, self.headers, body)
                    with app.store_lock:
                        resp = dispatch(app.store, req)
            if fault in ("drop", "drop-after"):
                resp = None

        if resp is None:
            self.close_connection = True
            blob = b""
        else:
            blob = self._serialize(resp, method == "HEAD")
        bytes_in = self.rfile.count - self._mark_in
        bytes_out = self.wfile.count - self._mark_out + len(blob)
        if not control:
            with app.lock:
                stats = app.stats
                stats.requests += 1
                stats.bytes_in += bytes_in
                stats.bytes_out += bytes_out
                if not self._counted:
                    self._counted = True
                    stats.connections += 1
                stats.by_endpoint[endpoint] = stats.by_endpoint.get(endpoint, 0) + 1
                status = str(resp.status) if resp else "-"
                stats.by_status[status] = stats.by_status.get(status, 0) + 1
                if fault:
                    stats.faults += 1
                    stats.by_fault[fault] = stats.by_fault.get(fault, 0) + 1
        app.log(method, path, resp.status if resp else "-", fault)
        if fault == "slow":
            time.sleep(app.faults.slow_seconds)
        if blob:
            self._send(blob)
        self._mark_in = self.rfile.count
        self._mark_out = self.wfile.count

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that go away (timeouts, dropped TLS handshakes) are expected here.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (see --port-file)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--username", help="require HTTP Basic auth with this user")
    p.add_argument("--password", help="the Basic auth password")
    p.add_argument("--token", help="require (or also accept) 'Authorization: Bearer TOKEN'")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate")
    p.add_argument("--tls-key", help="the certificate's PEM private key")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per request")
    p.add_argument("--faults", help=f"comma list among {','.join(FAULT_KINDS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault choices")
    p.add_argument("--retry-after", type=float, default=1, help="Retry-After seconds on 503 and 429")
    p.add_argument("--slow-seconds", type=float, default=3.0, help="delay of the 'slow' fault")
    p.add_argument("--fault-only", help="inject faults only into requests whose 'METHOD /path' contains this")
    p.add_argument("--fault-max", type=int, help="inject at most this many faults")
    p.add_argument("--log", help="append one line per request (method, path, status, fault)")
    args = p.parse_args(argv)
    if args.faults:
        for kind in args.faults.split(","):
            if kind not in FAULT_KINDS:
                p.error(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if not 0 <= args.fault_rate <= 1:
        p.error("--fault-rate must be within 0..1")
    if (args.username is None) != (args.password is None):
        p.error("--username and --password go together")
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Server((args.host, args.port), Handler)
    server.app = App(args)
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    port = server.server_address[1]

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"mlflow_test_server: listening on {scheme}://{args.host}:{port}", file=sys.stderr, flush=True)
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
