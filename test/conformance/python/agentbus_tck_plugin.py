"""
pytest plugin that lets the vendored A2A TCK (test/conformance/a2a-tck, unchanged)
run on Debian bookworm's Python packages against the agentbus A2A bridge.
Loaded with `-p agentbus_tck_plugin` (this directory on PYTHONPATH). It replaces
no library and changes no test; it does two things, each for a stated reason:

1. A2A-Version: 1.0 on every request the kit makes (HTTP headers of `requests`
   and `httpx` clients, gRPC metadata), unless the kit sets the header itself.
   A2A v1.0 (specification.md §3.6.1: "Clients MUST send the A2A-Version header
   ... 0.3 will be assumed for empty header") makes a request without it an
   A2A 0.3 request; the kit's 1.0 line at the vendored commit never sends it,
   which upstream fixed later on its 1.0-dev line ("fix: add A2A-Version: 1.0
   header to all requests in tests (#176)", "fix: Add missing A2A-Version
   header (#177)"). Without it a spec-following server answers the kit in
   A2A 0.3 (a 0.3 agent card, no 1.0 methods), so nothing could be tested.

2. gRPC stubs the installed protobuf can load. The kit ships stubs generated
   for protobuf >= 5.29 (`from google.protobuf import runtime_version`) that
   import googleapis-common-protos (`google.api.annotations_pb2`) and, in
   `a2a_pb2_grpc.py`, call grpcio >= 1.62 (`_registered_method=`). Debian
   bookworm has protobuf 3.21 (python3-protobuf, module version 4.21),
   grpcio 1.51 and no googleapis-common-protos. When the shipped stubs do not
   import, the plugin regenerates them from the kit's own proto
   (a2a-tck/current_spec/a2a.proto) with Debian's `protoc` (protobuf-compiler)
   and `grpc_python_plugin` (protobuf-compiler-grpc), after removing the
   `google.api.*` annotations (HTTP routes, field_behavior, method_signature:
   options that change neither the messages nor their wire or JSON form), into
   a temporary directory put first on sys.path as package `a2a.v1`, which the
   kit's gRPC client imports before its flat stubs.

It also writes one JSON line per test outcome to $AGENTBUS_TCK_RESULTS (when
set), which the vitest test reads: a stand-in for pytest-json-report
(not packaged by Debian), limited to what the test needs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

A2A_VERSION = os.environ.get("AGENTBUS_TCK_A2A_VERSION", "1.0")
HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(os.path.dirname(HERE), "a2a-tck")


# -- 1. A2A-Version on every request -----------------------------------------


def _with_version(headers):
    """`headers` (any mapping, or None) plus A2A-Version unless it names one (any case)."""
    merged = dict(headers or {})
    if not any(str(k).lower() == "a2a-version" for k in merged):
        merged["A2A-Version"] = A2A_VERSION
    return merged


def _patch_http_clients():
    import requests

    session_init = requests.Session.__init__

    def init(self, *args, **kwargs):
        session_init(self, *args, **kwargs)
        self.headers.setdefault("A2A-Version", A2A_VERSION)

    requests.Session.__init__ = init
    # requests.get/post and friends open a Session per call: covered above.

    import httpx

    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls.__init__

        def client_init(self, *args, _original=original, **kwargs):
            kwargs["headers"] = _with_version(kwargs.get("headers"))
            _original(self, *args, **kwargs)

        cls.__init__ = client_init

    # httpx.get/post/stream without a client build their own Client: covered above.


def _patch_grpc_metadata():
    try:
        from tck.transport import grpc_client
    except Exception:  # grpc not installed: the gRPC run is skipped elsewhere
        return
    prepare = grpc_client.GRPCClient._prepare_metadata

    def prepare_metadata(self, extra_headers=None):
        metadata = list(prepare(self, extra_headers))
        if not any(k.lower() == "a2a-version" for k, _ in metadata):
            metadata.append(("a2a-version", A2A_VERSION))
        return metadata

    grpc_client.GRPCClient._prepare_metadata = prepare_metadata


# -- 2. gRPC stubs for the installed protobuf ---------------------------------


def _shipped_stubs_load():
    stubs = os.path.join(KIT, "tck", "grpc_stubs")
    code = "import sys; sys.path.insert(0, %r); import a2a_pb2, a2a_pb2_grpc, grpc; a2a_pb2_grpc.A2AServiceStub(grpc.insecure_channel('localhost:1'))" % stubs
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.returncode == 0, (result.stderr.strip().splitlines() or [""])[-1]


def strip_google_api(proto: str) -> str:
    """The proto without its google.api imports and options (see the module doc)."""
    proto = re.sub(r'^import "google/api/[^"]+";\n', "", proto, flags=re.M)
    out, i = [], 0
    option = re.compile(r"option \(google\.api\.[a-z_]+\)\s*=\s*")
    while True:
        m = option.search(proto, i)
        if not m:
            out.append(proto[i:])
            break
        out.append(proto[i : m.start()])
        j = m.end()
        if proto[j] == "{":  # an aggregate value: to its matching brace
            depth = 0
            while True:
                c = proto[j]
                if c == '"':
                    j = proto.index('"', j + 1)
                elif c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                j += 1
        else:
            j = proto.index(";", j)
        if proto[j] == ";":
            j += 1
        i = j
    proto = "".join(out)
    proto = re.sub(r"\s*\[\(google\.api\.field_behavior\) = [A-Z_]+\]", "", proto)
    if "google.api" in proto:
        raise RuntimeError("a2a.proto: google.api annotations left after stripping")
    return proto


def generate_stubs(target: str) -> None:
    """Writes package `a2a.v1` (a2a_pb2, a2a_pb2_grpc) under `target`, from the kit's proto."""
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise RuntimeError("protoc and grpc_python_plugin are needed (Debian: protobuf-compiler protobuf-compiler-grpc)")
    src = os.path.join(target, "proto")
    os.makedirs(os.path.join(src, "a2a", "v1"))
    with open(os.path.join(KIT, "current_spec", "a2a.proto")) as f:
        proto = strip_google_api(f.read())
    with open(os.path.join(src, "a2a", "v1", "a2a.proto"), "w") as f:
        f.write(proto)
    subprocess.run(
        [protoc, f"-I{src}", f"--python_out={target}", f"--grpc_python_out={target}", f"--plugin=protoc-gen-grpc_python={plugin}", "a2a/v1/a2a.proto"],
        check=True,
        capture_output=True,
        text=True,
    )


_stub_dir = None


def pytest_configure(config):
    global _stub_dir
    _patch_http_clients()
    if config.getoption("--transports", default=None) and "grpc" in config.getoption("--transports"):
        ok, why = _shipped_stubs_load()
        if not ok:
            _stub_dir = tempfile.mkdtemp(prefix="a2a-tck-stubs-")
            generate_stubs(_stub_dir)
            sys.path.insert(0, _stub_dir)
            print(f"agentbus: the kit's gRPC stubs do not load here ({why}); regenerated from current_spec/a2a.proto into {_stub_dir}")
    _patch_grpc_metadata()


def pytest_unconfigure(config):
    if _stub_dir:
        shutil.rmtree(_stub_dir, ignore_errors=True)


# -- Results for the vitest test ----------------------------------------------


def pytest_runtest_logreport(report):
    path = os.environ.get("AGENTBUS_TCK_RESULTS")
    if not path:
        return
    # One line per phase that decides the outcome: a failed or skipped setup, the call, a failed teardown.
    if report.when == "call" or (report.when == "setup" and not report.passed) or (report.when == "teardown" and report.failed):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.failed:
            outcome = "error"
        message = ""
        if report.failed:
            message = report.longreprtext.strip().splitlines()[-1][:500] if report.longreprtext else ""
        elif report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])[:300]
        with open(path, "a") as f:
            f.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "outcome": outcome, "message": message}) + "\n")
