"""The OpenAPI document (openapi/openapi.yaml) and the response validator the API tests use.

No server is needed: these tests read the document and feed handmade bodies to openapi_validate.
Run: python -m pytest -q tests/test_openapi_spec.py
"""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

import openapi_validate as ov
from openapi_validate import validate_request_body, validate_response

SPEC = ov.load_spec()

PUBLIC = {("/health", "get"), ("/openapi.yaml", "get")}

# The API of the contract (§1), with the success statuses of each operation. 202 marks the answers
# given when the server's bounded wait (SYNC_WAIT_SECONDS) passes before the work is done.
CONTRACT = {
    "/health": {"get": {"200"}},
    "/images": {"get": {"200"}, "post": {"202"}},
    "/images/{name}": {"get": {"200"}, "delete": {"204"}},
    "/instances": {"get": {"200"}, "post": {"201", "202"}},
    "/instances/{id}": {"get": {"200"}, "delete": {"204", "202"}},
    "/instances/{id}/standby": {"post": {"200", "202"}},
    "/instances/{id}/restore": {"post": {"200", "202"}},
    "/instances/{id}/stop": {"post": {"200", "202"}},
    "/instances/{id}/start": {"post": {"200", "202"}},
    "/instances/{id}/logs": {"get": {"200"}},
    "/instances/{id}/volumes/{volumeId}": {"post": {"200"}, "delete": {"200"}},
    "/volumes": {"get": {"200"}, "post": {"201"}},
    "/volumes/from-archive": {"post": {"201"}},
    "/volumes/{id}": {"get": {"200"}, "delete": {"204", "202"}},
    "/ingresses": {"get": {"200"}, "post": {"201"}},
    "/ingresses/{id}": {"get": {"200"}, "delete": {"204"}},
}
EXTRA_PATHS = {"/openapi.yaml": {"get": {"200"}}}

# Every `code` string the API may answer with (contract §1.8 plus the edge's own codes).
CODE_CATALOGUE = {
    "Bad Request", "Unauthorized", "not_found", "ambiguous", "invalid_name", "invalid_size",
    "invalid_hotplug_size", "invalid_overlay_size", "image_not_ready", "already_exists",
    "name_conflict", "invalid_state", "log_not_found", "dependency_missing", "invalid_request",
    "invalid_form", "invalid_field", "missing_field", "missing_file", "archive_too_large", "conflict",
    "bad_request", "instance_not_found", "domain_not_allowed", "config_validation_failed",
    "hostname_in_use", "port_in_use", "limit_exceeded", "payload_too_large", "timeout",
    "unavailable", "internal_error",
}


def operations():
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in ov.HTTP_METHODS:
                yield path, method, op


def deref(node):
    return ov._deref(node)[0]


def error_codes(path, method, status):
    """The `code` values of the examples of one declared error response."""
    response = deref(SPEC["paths"][path][method]["responses"][status])
    examples = response["content"]["application/json"].get("examples", {})
    return {deref(e)["value"]["code"] for e in examples.values()}


def schema(name):
    return SPEC["components"]["schemas"][name]


# ------------------------------------------------------------------------------------------------
# The document


def test_document_is_valid_openapi_3_1():
    assert SPEC["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(SPEC).validate()


def test_spec_validator_rejects_a_broken_copy():
    # Guards the test above: the validator really looks at refs and types in this document.
    broken = copy.deepcopy(SPEC)
    broken["paths"]["/instances"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"}
    with pytest.raises(Exception):
        OpenAPIV31SpecValidator(broken).validate()
    broken = copy.deepcopy(SPEC)
    broken["paths"]["/health"]["get"]["responses"] = "nope"
    with pytest.raises(Exception):
        OpenAPIV31SpecValidator(broken).validate()


def test_every_local_ref_resolves():
    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                ov._deref({"$ref": node["$ref"]})  # raises AssertionError when dangling
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")
    walk(SPEC, "")


def test_paths_and_methods_are_exactly_the_contract():
    expected = {**CONTRACT, **EXTRA_PATHS}
    assert set(SPEC["paths"]) == set(expected)
    for path, methods in expected.items():
        declared = {m for m in SPEC["paths"][path] if m in ov.HTTP_METHODS}
        assert declared == set(methods), f"{path}: {sorted(declared)} != {sorted(methods)}"


@pytest.mark.parametrize("path,method", [(p, m) for p, ms in CONTRACT.items() for m in ms])
def test_success_statuses(path, method):
    responses = SPEC["paths"][path][method]["responses"]
    success = {s for s in responses if s.startswith("2")}
    assert success == CONTRACT[path][method]


def test_operation_ids_are_unique_and_every_operation_is_described():
    ids = [op.get("operationId") for _, _, op in operations()]
    assert all(ids), "every operation needs an operationId"
    assert len(ids) == len(set(ids)), f"duplicate operationIds: {ids}"
    for path, method, op in operations():
        assert op.get("summary") or op.get("description"), f"{method.upper()} {path} lacks a summary"


def test_bearer_security_everywhere_except_public_routes():
    scheme = SPEC["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path, method, op in operations():
        effective = op.get("security", SPEC.get("security", []))
        if (path, method) in PUBLIC:
            assert effective == [], f"{method.upper()} {path} must need no token"
        else:
            assert {"bearerAuth": []} in effective, f"{method.upper()} {path} lacks bearerAuth"
            assert "401" in op["responses"], f"{method.upper()} {path} lacks 401"


def test_every_json_response_has_a_schema_and_errors_use_error():
    for path, method, op in operations():
        for status, response in op["responses"].items():
            response = deref(response)
            assert response.get("description"), f"{method.upper()} {path} {status}: no description"
            for media, body in response.get("content", {}).items():
                if ov._is_json_media(media):
                    assert "schema" in body, f"{method.upper()} {path} {status}: JSON without schema"
                    if int(status) >= 400:
                        assert body["schema"] == {"$ref": "#/components/schemas/Error"}, \
                            f"{method.upper()} {path} {status}: error body must be Error"
            if status == "204" or (status == "202" and method == "delete"):
                assert "content" not in response


def test_authenticated_operations_list_edge_errors():
    for path, method, op in operations():
        if (path, method) in PUBLIC:
            continue
        for status in ("500", "503", "504"):
            assert status in op["responses"], f"{method.upper()} {path} lacks {status}"
        if "requestBody" in op:
            assert "413" in op["responses"], f"{method.upper()} {path} lacks 413"
    assert error_codes("/volumes", "post", "413") == {"payload_too_large"}
    assert error_codes("/instances", "get", "503") == {"unavailable"}
    assert error_codes("/instances", "get", "504") == {"timeout"}


def test_error_examples_are_valid_errors_with_catalogue_codes():
    error = Draft202012Validator(
        {"$ref": f"{ov.SPEC_URI}#/components/schemas/Error"}, registry=ov._registry())
    examples = SPEC["components"]["examples"]
    assert examples
    for name, example in examples.items():
        error.validate(example["value"])
        assert example["value"]["code"] in CODE_CATALOGUE, f"{name}: unknown code"


def test_client_mistakes_are_4xx_with_catalogue_codes():
    create = ("/instances", "post")
    assert {"limit_exceeded", "invalid_size",
            "invalid_hotplug_size", "invalid_overlay_size", "Bad Request"} <= error_codes(*create, "400")
    assert error_codes(*create, "404") == {"not_found"}
    assert error_codes(*create, "409") == {"conflict", "image_not_ready", "name_conflict"}
    assert "500" in SPEC["paths"]["/instances"]["post"]["responses"]
    assert error_codes("/volumes/{id}", "delete", "409") == {"ambiguous", "conflict"}
    assert error_codes("/images", "post", "400") == {"Bad Request", "invalid_name"}
    assert error_codes("/images", "post", "404") == {"not_found"}
    assert error_codes("/images/{name}", "get", "400") == {"invalid_name", "bad_request"}
    # Every operation with a path parameter declares the edge's 400 for a non-canonical path.
    for path, method, op in operations():
        if "{" in path:
            assert "bad_request" in error_codes(path, method, "400"), (path, method)
    for op in ("standby", "restore", "stop", "start"):
        assert error_codes(f"/instances/{{id}}/{op}", "post", "409") == {"ambiguous", "invalid_state"}
    assert error_codes("/instances/{id}/logs", "get", "404") == {"not_found", "log_not_found"}
    assert "conflict" in error_codes("/instances/{id}/volumes/{volumeId}", "post", "409")
    assert "not_implemented" not in {c for p, m, _ in operations()
                                     for s in SPEC["paths"][p][m]["responses"] if s >= "400"
                                     for c in error_codes(p, m, s)}
    assert {"invalid_request", "invalid_form", "invalid_field", "missing_field", "missing_file",
            "archive_too_large"} <= error_codes("/volumes", "post", "400")
    assert error_codes("/volumes", "post", "409") == {"already_exists"}
    assert {"bad_request", "domain_not_allowed", "config_validation_failed"} <= error_codes("/ingresses", "post", "400")
    assert error_codes("/ingresses", "post", "404") == {"instance_not_found"}
    assert error_codes("/ingresses", "post", "409") == {"already_exists", "hostname_in_use", "port_in_use", "ambiguous"}


def test_required_fields_match_what_the_sdk_insists_on():
    assert schema("Image")["required"] == ["name", "digest", "status", "created_at"]
    assert schema("Instance")["required"] == ["id", "name", "image", "state", "created_at"]
    assert schema("Volume")["required"] == ["id", "name", "size_gb", "created_at"]
    assert schema("Ingress")["required"] == ["id", "name", "rules", "created_at"]
    assert schema("Error")["required"] == ["code", "message"]


def test_required_fields_agree_with_the_installed_sdk():
    try:
        from hypeman import types as sdk
    except ImportError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"official SDK (pip hypeman) not importable: {e}")
    pairs = {"Image": sdk.Image, "Instance": sdk.Instance, "Volume": sdk.Volume, "Ingress": sdk.Ingress,
             "VolumeAttachment": sdk.VolumeAttachment, "VolumeMount": sdk.VolumeMount,
             "IngressRule": sdk.IngressRule, "IngressMatch": sdk.IngressMatch,
             "IngressTarget": sdk.IngressTarget}
    for name, model in pairs.items():
        sdk_required = {f for f, info in model.model_fields.items() if info.is_required()}
        assert set(schema(name)["required"]) == sdk_required, name


def test_enums_and_additions():
    assert schema("ImageStatus")["enum"] == ["pending", "pulling", "converting", "ready", "failed"]
    assert schema("InstanceState")["enum"] == [
        "Created", "Initializing", "Running", "Paused", "Shutdown", "Stopped", "Standby", "Unknown"]
    instance = schema("Instance")["properties"]
    assert instance["hypervisor"]["enum"] == ["cloud-hypervisor", "qemu"]
    assert instance["state_error"]["type"] == ["string", "null"]
    assert instance["started_at"]["type"] == ["string", "null"]
    assert instance["stopped_at"]["format"] == "date-time"
    image = schema("Image")["properties"]
    assert image["platform"]["type"] == "string"
    assert {"type": "null"} in image["progress"]["anyOf"]
    assert schema("ImageProgress")["required"] == ["bytes_done", "bytes_total"]
    network = schema("InstanceNetwork")["properties"]
    assert network["ip"]["type"] == ["string", "null"] and network["mac"]["type"] == ["string", "null"]


def test_request_schemas_defaults_and_rules():
    create = schema("CreateInstanceRequest")
    props = create["properties"]
    assert create["required"] == ["name", "image"]
    name = deref(props["name"])
    assert name["pattern"] == "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" and name["maxLength"] == 63
    assert (props["size"]["default"], props["hotplug_size"]["default"], props["overlay_size"]["default"]) \
        == ("1GB", "3GB", "10GB")
    assert props["vcpus"]["default"] == 2
    assert props["network"]["properties"]["enabled"]["default"] is True
    attach = schema("AttachVolumeRequest")
    assert attach["required"] == ["mount_path"] and attach["properties"]["readonly"]["default"] is False
    ingress = schema("CreateIngressRequest")
    assert ingress["properties"]["rules"]["minItems"] == 1
    assert deref(ingress["properties"]["name"]) == name
    assert schema("IngressMatch")["properties"]["port"]["default"] == 80
    assert set(schema("CreateVolumeRequest")["required"]) == {"name", "size_gb"}
    form = SPEC["paths"]["/volumes"]["post"]["requestBody"]["content"]
    assert set(form) == {"application/json", "multipart/form-data"}
    assert "content" in deref(form["multipart/form-data"]["schema"])["properties"]
    archive = SPEC["paths"]["/volumes/from-archive"]["post"]
    assert set(archive["requestBody"]["content"]) == {"application/gzip"}
    params = {p["name"]: p for p in archive["parameters"]}
    assert params["name"]["required"] and params["size_gb"]["required"] and not params["id"]["required"]


def test_logs_parameters():
    op = SPEC["paths"]["/instances/{id}/logs"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["tail"]["schema"] == {**params["tail"]["schema"], "type": "integer", "default": 100}
    assert params["follow"]["schema"] == {**params["follow"]["schema"], "type": "boolean", "default": False}
    assert params["source"]["schema"]["enum"] == ["app", "vmm", "hypeman"]
    assert params["source"]["schema"]["default"] == "app"
    assert set(op["responses"]["200"]["content"]) == {"text/event-stream"}


def test_info_documents_the_bounded_create_wait():
    text = SPEC["info"]["description"]
    assert "SYNC_WAIT_SECONDS" in text and "202" in text


# ------------------------------------------------------------------------------------------------
# openapi_validate on handmade bodies

TS = "2025-12-10T22:01:02.123456789-05:00"

GOOD_INSTANCE = {
    "id": "k3v9q0b2x7m4n8p1r5s6t0wz", "name": "web-1", "image": "nginx:alpine", "state": "Running",
    "state_error": None, "size": "1024.0 MB", "hotplug_size": "3.0 GB", "overlay_size": "10.0 GB",
    "vcpus": 2, "hypervisor": "cloud-hypervisor", "env": {"PORT": "8080"},
    "network": {"enabled": True, "name": "default", "ip": "10.100.37.12", "mac": "02:00:00:5e:a1:0c"},
    "volumes": [{"volume_id": "vq2m", "mount_path": "/mnt/data", "readonly": False}],
    "created_at": TS, "started_at": TS, "stopped_at": None, "has_snapshot": False,
}
GOOD_IMAGE = {
    "name": "docker.io/library/alpine:latest", "digest": "sha256:" + "ab" * 32, "status": "pulling",
    "queue_position": None, "progress": {"bytes_done": 1024, "bytes_total": 4096}, "error": None,
    "size_bytes": None, "platform": "linux/amd64", "entrypoint": None, "cmd": ["/bin/sh"],
    "working_dir": None, "created_at": "2025-12-10T22:00:47Z",
}
GOOD_VOLUME = {
    "id": "vq2mx", "name": "my-data", "size_gb": 10,
    "attachments": [{"instance_id": "k3v9", "mount_path": "/mnt/data", "readonly": False}],
    "created_at": "2025-12-10T21:59:00-05:00",
}
GOOD_INGRESS = {
    "id": "c8w1", "name": "web", "created_at": "2025-12-11T03:00:00Z",
    "rules": [{"match": {"hostname": "app.example.com", "port": 80},
               "target": {"instance": "web-1", "port": 8080}, "tls": False, "redirect_http": False}],
}


def without(d, key):
    return {k: v for k, v in d.items() if k != key}


def test_good_bodies_pass():
    validate_response("GET", "/instances/web-1", 200, GOOD_INSTANCE)
    validate_response("GET", "/instances", 200, [GOOD_INSTANCE])
    validate_response("POST", "/instances", 201, GOOD_INSTANCE)
    validate_response("POST", "/instances", 202, {**GOOD_INSTANCE, "state": "Initializing", "started_at": None})
    validate_response("POST", "/instances/web-1/standby", 200,
                      {**GOOD_INSTANCE, "state": "Standby", "has_snapshot": True, "stopped_at": TS})
    validate_response("GET", "/instances/x", 200,
                      {**without(GOOD_INSTANCE, "volumes"), "state": "Unknown",
                       "state_error": "failed to query VMM: connection refused",
                       "network": {"enabled": False, "ip": None, "mac": None}})
    validate_response("GET", "/volumes/my-data", 200, GOOD_VOLUME)
    validate_response("GET", "/volumes", 200, [without(GOOD_VOLUME, "attachments")])
    validate_response("POST", "/volumes", 201, GOOD_VOLUME)
    validate_response("POST", "/images", 202, GOOD_IMAGE)
    validate_response("GET", "/images", 200, [{**GOOD_IMAGE, "status": "ready", "progress": None,
                                               "size_bytes": 10485760, "env": {"PATH": "/bin"}}])
    validate_response("POST", "/ingresses", 201, GOOD_INGRESS)
    validate_response("GET", "/health", 200, {"status": "ok"})
    validate_response("GET", "/instances/web-1", 404, {"code": "not_found", "message": "resource not found"})


def test_good_bodies_also_parse_with_the_sdk():
    try:
        from hypeman import types as sdk
    except ImportError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"official SDK (pip hypeman) not importable: {e}")
    assert sdk.Instance.model_validate(GOOD_INSTANCE).state == "Running"
    assert sdk.Image.model_validate(GOOD_IMAGE).platform == "linux/amd64"
    assert sdk.Volume.model_validate(GOOD_VOLUME).attachments[0].readonly is False
    assert sdk.Ingress.model_validate(GOOD_INGRESS).rules[0].target.port == 8080


def test_instance_missing_state_fails():
    with pytest.raises(AssertionError, match="'state' is a required property"):
        validate_response("GET", "/instances/web-1", 200, without(GOOD_INSTANCE, "state"))


@pytest.mark.parametrize("bad,where", [
    ({"state": "Booting"}, "/state"),
    ({"size": "1GB"}, "/size"),
    ({"created_at": "2025-12-10 22:01:02"}, "/created_at"),
    ({"created_at": "2025-13-10T22:01:02Z"}, "/created_at"),
    ({"started_at": "soon"}, "/started_at"),
    ({"hypervisor": "firecracker"}, "/hypervisor"),
    ({"network": {"enabled": True, "ip": 5}}, "/network/ip"),
    ({"has_snapshot": "no"}, "/has_snapshot"),
    ({"vcpus": "2"}, "/vcpus"),
    ({"stat": "Running"}, "/"),
])
def test_bad_instances_fail(bad, where):
    with pytest.raises(AssertionError, match=f"schema at {where}:"):
        validate_response("GET", "/instances/web-1", 200, {**GOOD_INSTANCE, **bad})


def test_image_with_weird_status_fails():
    with pytest.raises(AssertionError, match="'weird' is not one of"):
        validate_response("GET", "/images/alpine", 200, {**GOOD_IMAGE, "status": "weird"})


@pytest.mark.parametrize("bad", [
    {"progress": {"bytes_done": 1}},
    {"digest": "md5:abc"},
    {"queue_position": 0},
    {"created_at": None},
])
def test_bad_images_fail(bad):
    with pytest.raises(AssertionError):
        validate_response("GET", "/images/alpine", 200, {**GOOD_IMAGE, **bad})


def test_bad_volumes_and_ingresses_fail():
    with pytest.raises(AssertionError, match="size_gb"):
        validate_response("GET", "/volumes/v", 200, {**GOOD_VOLUME, "size_gb": "10"})
    with pytest.raises(AssertionError, match="readonly"):
        validate_response("GET", "/volumes/v", 200,
                          {**GOOD_VOLUME, "attachments": [{"instance_id": "i", "mount_path": "/m"}]})
    with pytest.raises(AssertionError, match="'rules' is a required property"):
        validate_response("GET", "/ingresses/web", 200, without(GOOD_INGRESS, "rules"))


def test_error_bodies():
    validate_response("DELETE", "/volumes/v", 409, {"code": "conflict", "message": "volume is in use"})
    with pytest.raises(AssertionError, match="'message' is a required property"):
        validate_response("GET", "/volumes/v", 404, {"code": "not_found"})
    with pytest.raises(AssertionError, match="not JSON"):
        validate_response("GET", "/volumes/v", 404, "404 page not found")
    validate_response("GET", "/volumes/v", 404, b'{"code":"not_found","message":"resource not found"}')


def test_status_must_be_declared():
    with pytest.raises(AssertionError, match="status 202 is not declared"):
        validate_response("GET", "/instances/web-1", 202, GOOD_INSTANCE)
    with pytest.raises(AssertionError, match="status 500 is not declared"):
        validate_response("GET", "/openapi.yaml", 500, {"code": "internal_error", "message": "x"})


def test_path_matching():
    assert ov.find_operation("GET", "/images/docker.io%2Flibrary%2Falpine%3Alatest")[0] == "/images/{name}"
    assert ov.find_operation("get", "/images/alpine")[0] == "/images/{name}"
    assert ov.find_operation("POST", "/volumes/from-archive?name=a&size_gb=1")[0] == "/volumes/from-archive"
    assert ov.find_operation("GET", "/volumes/vq2mx")[0] == "/volumes/{id}"
    assert ov.find_operation("DELETE", "/instances/a/volumes/b")[0] == "/instances/{id}/volumes/{volumeId}"
    assert ov.find_operation("GET", "/instances/a/logs?tail=5&follow=true")[0] == "/instances/{id}/logs"
    with pytest.raises(AssertionError, match="no path"):
        ov.find_operation("GET", "/images/docker.io/library/alpine")  # unencoded slashes
    with pytest.raises(AssertionError, match="no path"):
        ov.find_operation("GET", "/instances/")
    with pytest.raises(AssertionError, match="no path"):
        ov.find_operation("GET", "/v1/instances")
    with pytest.raises(AssertionError, match="method not declared"):
        ov.find_operation("PUT", "/instances/a")


def test_bodiless_and_text_answers():
    validate_response("DELETE", "/instances/a", 204)
    validate_response("DELETE", "/instances/a", 204, None)
    validate_response("DELETE", "/volumes/v", 202, b"")
    validate_response("POST", "/instances/a/stop", 202, {**GOOD_INSTANCE, "state": "Running"})
    validate_response("DELETE", "/images/alpine", 204, b"")
    with pytest.raises(AssertionError, match="no body is declared"):
        validate_response("DELETE", "/instances/a", 204, {"ok": True})
    with pytest.raises(AssertionError, match="none was given"):
        validate_response("GET", "/instances/a", 200)
    validate_response("GET", "/instances/a/logs", 200, 'data: "hello"\n\n', "text/event-stream")
    validate_response("GET", "/instances/a/logs", 404, {"code": "log_not_found", "message": "m"},
                      "application/json; charset=utf-8")
    with pytest.raises(AssertionError, match="content type 'text/plain' not declared"):
        validate_response("GET", "/instances/a/logs", 200, "x", "text/plain")
    validate_response("GET", "/openapi.yaml", 200, "openapi: 3.1.0\n", "application/yaml")


def test_request_bodies():
    validate_request_body("POST", "/instances", {"name": "web-1", "image": "alpine"})
    validate_request_body("POST", "/instances", {
        "name": "a", "image": "nginx:alpine", "size": "512MB", "vcpus": 1, "env": {"A": "b"},
        "network": {"enabled": False}, "hypervisor": "qemu",
        "volumes": [{"volume_id": "v", "mount_path": "/data", "readonly": True}]})
    for bad in ({"name": "Web_1", "image": "alpine"}, {"name": "a" * 64, "image": "alpine"},
                {"name": "-a", "image": "alpine"}, {"image": "alpine"}, {"name": "a", "image": "x", "vcpus": "2"}):
        with pytest.raises(AssertionError):
            validate_request_body("POST", "/instances", bad)
    validate_request_body("POST", "/ingresses", {"name": "web", "rules": [
        {"match": {"hostname": "{instance}.example.com"}, "target": {"instance": "{instance}", "port": 80}}]})
    with pytest.raises(AssertionError, match="should be non-empty"):
        validate_request_body("POST", "/ingresses", {"name": "web", "rules": []})
    validate_request_body("POST", "/instances/a/volumes/v", {"mount_path": "/data"})
    with pytest.raises(AssertionError, match="mount_path"):
        validate_request_body("POST", "/instances/a/volumes/v", {"readonly": True})
    validate_request_body("POST", "/volumes", {"name": "d", "size_gb": 1})
    validate_request_body("POST", "/volumes", {"name": "d", "size_gb": 1, "content": b"\x1f\x8b"},
                          "multipart/form-data")
    with pytest.raises(AssertionError, match="'content' is a required property"):
        validate_request_body("POST", "/volumes", {"name": "d", "size_gb": 1}, "multipart/form-data")
    validate_request_body("POST", "/volumes/from-archive?name=d&size_gb=1", b"\x1f\x8b", "application/gzip")
    with pytest.raises(AssertionError, match="request body is required"):
        validate_request_body("POST", "/images", None)
    with pytest.raises(AssertionError, match="takes no request body"):
        validate_request_body("POST", "/instances/a/stop", {"force": True})


def test_spec_is_loaded_once():
    assert ov.load_spec() is ov.load_spec()
