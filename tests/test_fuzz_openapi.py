"""Schemathesis over every operation of the served OpenAPI document, as the admin.

The document is the panel's own (``GET /api/v1/openapi.json``, plugin routes included);
every path parameter is a real seeded object (``tests/support/seeded.py``), so routes
behind ``/{id}`` are reached rather than answering 404. For each operation, valid
(positive) and invalid (negative) requests are generated and each answer is checked: no
5xx, a status the document declares, a body matching the declared schema (and content
type), never a traceback. A 503 (a node or a remote service unavailable, such as a
repository folder that does not exist) is allowed where the document declares it. Operations run in a fixed order, reads first and deletes last.
Fuzzer-chosen hosts, URLs and folders are confined to this machine's closed port and the
test's temporary folder (:func:`confine`), so nothing outside the test is touched.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hypervisor_panel.openapi import openapi_document
from hypervisor_panel.panel import Panel
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.routes import PREFIX
from hypervisor_panel.validation import validator_for
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.client import Client
from tests.support.netmode import TestModes
from tests.support.seeded import seed

EXAMPLES = 25  # per operation and generation mode
#: (method, path) -> why the fuzzer leaves it out.
EXCLUDED: dict[tuple[str, str], str] = {
    ("POST", "/auth/logout"): "revokes the fuzzer's own token",
    ("POST", "/auth/logout-everywhere"): "revokes the fuzzer's own token",
    ("POST", "/backup-targets/{target_id}/actions/restore-panel"):
        "replaces the whole panel (its data and the admin's tokens) with an archive",
    ("POST", "/nodes"): "joins a node over SSH: a remote machine and minutes of timeouts",
    ("POST", "/nodes/host-key"): "connects over SSH to a host the fuzzer names",
    ("POST", "/nodes/local-libvirt"): "adds this machine's real libvirtd as a node",
}
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]+", line \d+')
CLOSED_PORT = 9  # discard: nothing listens there, a connection is refused at once
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
UNAVAILABLE = 503  # a declared answer: a node or remote service is unavailable


def confine(body: Any, tmp: Path) -> Any:
    """``body`` with every host, port, URL and folder it names made local and harmless."""
    if isinstance(body, list):
        return [confine(item, tmp) for item in body]
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in ("host", "migration_host") and isinstance(value, str):
            value = "127.0.0.1"
        elif key == "port" and isinstance(value, int | float) and not isinstance(value, bool):
            value = CLOSED_PORT
        elif key == "monitors" and isinstance(value, list):
            value = [f"127.0.0.1:{CLOSED_PORT}"]
        elif key == "url" and isinstance(value, str):
            scheme = value.partition("://")[0] if "://" in value else "http"
            value = f"{scheme}://127.0.0.1:{CLOSED_PORT}/index.json"
        elif key in ("path", "mount_point") and isinstance(value, str) and \
                value.startswith("/"):
            value = str(tmp / "confined" / (re.sub(r"[^A-Za-z0-9]", "", value) or "x"))
        else:
            value = confine(value, tmp)
        out[key] = value
    return out


def _order(operation: Any) -> tuple[int, int, str]:
    """Reads first, then writes, deletes last (longest paths, the inner objects, first)."""
    method = operation.method.upper()
    rank = {"GET": 0, "DELETE": 2}.get(method, 1)
    return rank, -len(operation.path) if rank == 2 else 0, operation.path


def fuzz_operation(operation: Any, params: dict[str, str], server: str,
                   headers: dict[str, str], tmp: Path, statuses: set[int]) -> list[str]:
    """Send EXAMPLES valid and EXAMPLES invalid requests to ``operation``; the problems
    (``statuses`` gets the answers' statuses)."""
    label = f"{operation.method.upper()} {operation.path}"
    failures: list[str] = []
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode, path_parameters=params)
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @settings(max_examples=2 * EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        if isinstance(case.body, dict | list):
            case.body = confine(case.body, tmp)
        case.path_parameters = {**(case.path_parameters or {}), **params}
        response = case.call(base_url=server, headers=headers, timeout=30)
        statuses.add(response.status_code)
        problems = []
        if response.status_code >= 500 and response.status_code != UNAVAILABLE:
            problems.append(f"a server error: {response.status_code}")
        text = (response.content or b"").decode(errors="replace")
        if TRACEBACK.search(text):
            problems.append(f"a traceback in the answer:\n{text[:2000]}")
        if problems:
            problems.append(case.as_curl_command(headers={"Authorization": "[token]"}))
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # the failed checks, with curl
            problems.append(str(exc)[:3000])
        if problems:
            failures.append(f"{label}: " + "\n".join(problems))

    try:
        fuzz()
    except Exception as exc:  # generating the requests failed
        failures.append(f"{label}: {type(exc).__name__}: {exc}"[:3000])
    return failures


@pytest.mark.slow
def test_every_operation_survives_the_fuzzer(server: str, admin: Client, tmp_path: Path):
    ids = seed(admin, tmp_path)
    spec = admin.get(f"{PREFIX}/openapi.json").body
    schema = schemathesis.openapi.from_dict(spec)
    headers = {"Authorization": f"Bearer {admin.token}"}
    documented = {(method.upper(), path.removeprefix(PREFIX))
                  for path, ops in spec["paths"].items() for method in ops}
    assert set(EXCLUDED) <= documented, set(EXCLUDED) - documented
    operations = sorted(
        (op.ok() for op in schema.get_all_operations()
         if (op.ok().method.upper(), op.ok().path.removeprefix(PREFIX)) not in EXCLUDED),
        key=_order)
    assert len(operations) == len(documented) - len(EXCLUDED)
    failures: list[str] = []
    timings: list[tuple[float, str]] = []
    never_ok: list[str] = []  # operations no request got a 2xx from
    for operation in operations:
        path = operation.path.removeprefix(PREFIX)
        params = {name: ids["reserved"] if name == "address" and "/reservations/" in path
                  else ids[name] for name in re.findall(r"\{(\w+)\}", path)}
        started, statuses = time.monotonic(), set[int]()
        failures += fuzz_operation(operation, params, server, headers, tmp_path, statuses)
        label = f"{operation.method.upper()} {path}"
        timings.append((time.monotonic() - started, label))
        if not any(200 <= status < 300 for status in statuses):
            never_ok.append(f"{label} {sorted(statuses)}")
    slowest = ", ".join(f"{label} {seconds:.1f}s" for seconds, label in
                        sorted(timings, reverse=True)[:5])
    print(f"fuzzed {len(operations)} operations; slowest: {slowest}; never a 2xx from "
          f"{len(never_ok)}: {', '.join(never_ok)}")
    assert not failures, f"{len(failures)} failing answers:\n\n" + "\n\n".join(failures)


def test_the_document_says_what_is_enforced(tmp_path: Path):
    """What the fuzzer relies on: back-end enums from the loaded plugins (a third-party
    network mode included), ``required`` bodies exactly where ``{}`` is refused, the 413
    of every body, and links that reach every operation with a path parameter."""
    panel = Panel(tmp_path / "data", pm=get_plugin_manager(extra=[TestModes()]),
                  local_uri=node_uri_for(tmp_path),
                  default_storage_path=str(tmp_path / "images"))
    panel.start(admin_password=ADMIN_PASSWORD)
    try:
        doc = openapi_document(panel.routes)
        ops = {(method.upper(), path.removeprefix(PREFIX)): op
               for path, item in doc["paths"].items() for method, op in item.items()}

        def body(method: str, path: str) -> dict[str, Any]:
            return ops[method, path]["requestBody"]["content"]["application/json"]["schema"]

        assert body("POST", "/networks")["properties"]["mode"]["enum"] == \
            sorted(panel.networks.modes)
        assert "isolated-test" in panel.networks.modes
        assert body("POST", "/storages")["properties"]["backend"]["enum"] == \
            sorted(panel.storages.backends)
        for route in panel.routes:
            op = ops[route.method, route.path]
            if route.body is not None:
                assert op["requestBody"]["required"] == \
                    (not validator_for(route.body).is_valid({})), route.path
            if route.method in ("POST", "PUT", "PATCH"):
                assert "413" in op["responses"], route.path
        assert "401" in ops["POST", "/auth/login"]["responses"]
        created = ops["POST", "/users"]["responses"]["201"]["links"]
        assert created["get_get_user"]["parameters"] == {"user_id": "$response.body#/id"}
        task = ops["POST", "/vms"]["responses"]["202"]["links"]["get_get_task"]
        assert task["parameters"] == {"task_id": "$response.body#/task/id"}
        targets = {link["operationId"] for op in ops.values()
                   for answer in op["responses"].values()
                   for link in answer.get("links", {}).values()}
        unreachable = {key for key, op in ops.items()
                       if "{" in key[1] and op["operationId"] not in targets}
        # An address of a NIC is nested in the NIC: no link names it.
        assert unreachable == {("DELETE", "/vms/{vm_id}/interfaces/{nic_id}/addresses/"
                                          "{address}")}
    finally:
        panel.close()
