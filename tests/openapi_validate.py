"""Check HTTP answers (and request bodies) against openapi/openapi.yaml.

Used by the API tests:

    from openapi_validate import validate_response
    validate_response("GET", "/instances/abc", r.status_code, r.json())

Every mismatch raises AssertionError with a message naming the operation, the status and the
place in the body that is wrong. Only PyYAML, jsonschema and referencing are used.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.yaml"
SPEC_URI = "urn:hypeman:openapi"

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

_NO_BODY = object()

# RFC 3339 date-time (section 5.6): full-date "T" full-time, with a mandatory offset.
_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$"
)


def _is_rfc3339_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    m = _DATE_TIME.match(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    if hour > 23 or minute > 59 or second > 60:  # 60: leap second
        return False
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("date-time")(_is_rfc3339_date_time)
    return checker


FORMAT_CHECKER = _format_checker()


@functools.lru_cache(maxsize=None)
def load_spec(path: str | Path = SPEC_PATH) -> dict:
    """The parsed document (cached; treat as read-only)."""
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3.1"):
        raise AssertionError(f"{path}: not an OpenAPI 3.1 document")
    return spec


@functools.lru_cache(maxsize=None)
def _registry(path: str | Path = SPEC_PATH) -> Registry:
    resource = Resource(contents=load_spec(path), specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def _pointer(*parts: str) -> str:
    """A JSON pointer (without the leading '/') as a URI fragment: ~ and / escaped, then %-quoted."""
    return "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


@functools.lru_cache(maxsize=None)
def _validator(pointer: str, path: str | Path = SPEC_PATH) -> Draft202012Validator:
    """A validator for the schema at `pointer` in the document; its $refs resolve in the document."""
    schema = {"$ref": f"{SPEC_URI}#/{pointer}"}
    return Draft202012Validator(schema, registry=_registry(path), format_checker=FORMAT_CHECKER)


def _deref(node: Any, path: str | Path = SPEC_PATH) -> tuple[Any, list[str]]:
    """Follows a Reference Object (local refs only) and returns the target and its pointer parts."""
    parts: list[str] = []
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise AssertionError(f"unsupported $ref {ref!r} (only local refs are resolved)")
        if ref in seen:
            raise AssertionError(f"$ref cycle at {ref}")
        seen.add(ref)
        parts = [unquote(p).replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
        node = load_spec(path)
        for p in parts:
            try:
                node = node[p]
            except (KeyError, TypeError):
                raise AssertionError(f"dangling $ref {ref}") from None
    return node, parts


def _split_path(url_path: str) -> list[str]:
    path = urlsplit(url_path).path if "://" in url_path else url_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise AssertionError(f"path must start with '/': {url_path!r}")
    # Split the raw path: a %2F inside a segment (an encoded image reference) stays in its segment.
    return path.split("/")[1:]


def find_operation(method: str, url_path: str, path: str | Path = SPEC_PATH) -> tuple[str, str, dict]:
    """(template, method, operation) for a concrete request path such as /images/nginx%3Aalpine.

    Templates match segment by segment; a parameter matches one non-empty raw segment. When several
    templates match, the one with the most literal segments wins (so /volumes/from-archive beats
    /volumes/{id}).
    """
    spec = load_spec(path)
    segments = _split_path(url_path)
    candidates = []
    for template, item in spec.get("paths", {}).items():
        tsegs = template.split("/")[1:]
        if len(tsegs) != len(segments):
            continue
        literal = 0
        for t, s in zip(tsegs, segments):
            if t.startswith("{") and t.endswith("}"):
                if s == "":
                    break
            elif t == s:
                literal += 1
            else:
                break
        else:
            candidates.append((literal, template, item))
    if not candidates:
        raise AssertionError(f"{method.upper()} {url_path}: no path in the OpenAPI document matches")
    candidates.sort(key=lambda c: -c[0])
    _, template, item = candidates[0]
    m = method.lower()
    operation = item.get(m)
    if operation is None:
        declared = sorted(k.upper() for k in item if k in HTTP_METHODS)
        raise AssertionError(
            f"{method.upper()} {url_path}: method not declared for {template} (declared: {', '.join(declared)})"
        )
    return template, m, operation


def _find_response(template: str, method: str, operation: dict, status: int, path) -> tuple[dict, list[str]]:
    responses = operation.get("responses", {})
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            node, parts = _deref(responses[key], path)
            if not parts:
                parts = ["paths", template, method, "responses", key]
            return node, parts
    raise AssertionError(
        f"{method.upper()} {template}: status {status} is not declared "
        f"(declared: {', '.join(sorted(responses))})"
    )


def _is_json_media(media: str) -> bool:
    media = media.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _coerce_json(body: Any, where: str) -> Any:
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8")
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError as e:
            raise AssertionError(f"{where}: body is not JSON ({e}): {body[:200]!r}") from None
    return body


def _check_schema(pointer_parts: list[str], instance: Any, where: str, path) -> None:
    validator = _validator(_pointer(*pointer_parts), path)
    errors = list(validator.iter_errors(instance))
    if not errors:
        return
    err = best_match(errors)
    location = "/" + "/".join(str(p) for p in err.absolute_path)
    schema_at = "/".join(str(p) for p in err.absolute_schema_path)
    snippet = json.dumps(instance, default=str)
    if len(snippet) > 600:
        snippet = snippet[:600] + "…"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    raise AssertionError(
        f"{where}: body does not match the schema at {location}: {err.message}{more}\n"
        f"  schema path: {schema_at}\n  body: {snippet}"
    )


def _pick_media(content: dict, content_type: str | None, where: str) -> str:
    if content_type:
        wanted = content_type.split(";", 1)[0].strip().lower()
        for media in content:
            if media.lower() == wanted:
                return media
        raise AssertionError(f"{where}: content type {wanted!r} not declared (declared: {', '.join(content)})")
    for media in content:
        if _is_json_media(media):
            return media
    return next(iter(content))


def validate_response(method: str, url_path: str, status: int, body: Any = _NO_BODY,
                      content_type: str | None = None, *, spec_path: str | Path = SPEC_PATH) -> None:
    """Asserts that `status` is declared for the operation and that `body` matches its schema.

    `body` is the decoded JSON value (str/bytes are parsed as JSON when the answer is JSON). For an
    answer declared without content (204) the body must be absent, None, "" or b"". For non-JSON
    media types (event streams, YAML) only the presence of a text body is checked. `content_type`,
    when given (e.g. the Content-Type header), must be one of the declared media types.
    """
    template, m, operation = find_operation(method, url_path, spec_path)
    where = f"{method.upper()} {url_path} ({operation.get('operationId', template)}) → {status}"
    response, parts = _find_response(template, m, operation, status, spec_path)
    content = response.get("content")
    if not content:
        if body is not _NO_BODY and body not in (None, "", b""):
            raise AssertionError(f"{where}: no body is declared but one was sent: {str(body)[:200]!r}")
        return
    media = _pick_media(content, content_type, where)
    if body is _NO_BODY:
        raise AssertionError(f"{where}: a {media} body is declared but none was given")
    media_obj = content[media]
    if _is_json_media(media):
        value = _coerce_json(body, where)
        if "schema" not in media_obj:
            raise AssertionError(f"{where}: the document declares {media} without a schema")
        _check_schema(parts + ["content", media, "schema"], value, where, spec_path)
    else:
        if not isinstance(body, (str, bytes, bytearray)):
            raise AssertionError(f"{where}: expected a {media} text body, got {type(body).__name__}")


def validate_request_body(method: str, url_path: str, body: Any,
                          content_type: str = "application/json", *,
                          spec_path: str | Path = SPEC_PATH) -> None:
    """Asserts that `body` is an acceptable request body for the operation.

    JSON bodies may be given decoded or as str/bytes. A multipart body is given as a dict of field
    values (bytes for file parts); a raw binary body (application/gzip) as bytes.
    """
    template, m, operation = find_operation(method, url_path, spec_path)
    where = f"{method.upper()} {url_path} ({operation.get('operationId', template)}) request"
    request_body = operation.get("requestBody")
    if request_body is None:
        if body not in (None, "", b"", {}):
            raise AssertionError(f"{where}: the operation takes no request body")
        return
    request_body, parts = _deref(request_body, spec_path)
    if not parts:
        parts = ["paths", template, m, "requestBody"]
    if body is None:
        if request_body.get("required"):
            raise AssertionError(f"{where}: a request body is required")
        return
    content = request_body.get("content", {})
    media = _pick_media(content, content_type, where)
    pointer = parts + ["content", media, "schema"]
    if _is_json_media(media):
        _check_schema(pointer, _coerce_json(body, where), where, spec_path)
    elif media.lower() == "multipart/form-data":
        if not isinstance(body, dict):
            raise AssertionError(f"{where}: a multipart body is given as a dict of fields")
        fields = {k: (bytes(v).decode("latin-1") if isinstance(v, (bytes, bytearray)) else v)
                  for k, v in body.items()}
        _check_schema(pointer, fields, where, spec_path)
    else:
        if not isinstance(body, (bytes, bytearray, str)):
            raise AssertionError(f"{where}: a {media} body is bytes, got {type(body).__name__}")


def check_http_response(response: Any, *, spec_path: str | Path = SPEC_PATH) -> None:
    """validate_response for a `requests.Response`: method, raw path, status, Content-Type, body."""
    request = response.request
    content_type = response.headers.get("Content-Type") or None
    raw = response.content
    if not raw:
        body: Any = None
    elif content_type and _is_json_media(content_type):
        body = raw
    else:
        body = raw.decode("utf-8", "replace")
    if not raw:
        content_type = None
    validate_response(request.method, request.path_url, response.status_code, body,
                      content_type, spec_path=spec_path)
