"""One decision table: the client package owns it, the server decides with it."""

from __future__ import annotations

import json
import subprocess
import sys

import licensing.decision
from licensing.client import Operation as ClientOperation
from licensing.v1 import licensing_pb2 as pb

import licensing_server.domain.decision
import licensing_server.domain.runtime
from licensing_server.domain.license import iso_time

IMPORT_TIMEOUT = 60.0


def modules_loaded_by(statement: str, refuse: str = "") -> list[str]:
    """Run `statement` in a fresh interpreter; the top-level packages it loaded beyond the
    standard library. With `refuse`, importing that package fails instead."""
    program = f"""
import json, sys
refused = {refuse!r}
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if refused and name.split(".")[0] == refused:
            raise ImportError(f"{{name}} may not be imported here")
        return None
sys.meta_path.insert(0, Refuse())
before = set(sys.modules)
{statement}
loaded = {{m.split(".")[0] for m in set(sys.modules) - before}}
print(json.dumps(sorted(m for m in loaded if m not in sys.stdlib_module_names)))
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_server_decides_with_the_client_packages_decision_table() -> None:
    assert licensing_server.domain.decision.Enforcement is licensing.decision.Enforcement
    assert licensing_server.domain.decision.Decision is licensing.decision.Decision
    assert licensing_server.domain.decision.DecisionReason is licensing.decision.DecisionReason
    assert licensing_server.domain.decision.Operation is licensing.decision.Operation
    assert licensing_server.domain.runtime.RuntimeState is licensing.decision.RuntimeState
    assert licensing_server.domain.runtime.Standing is licensing.decision.Standing
    assert iso_time is licensing.decision.iso_time


def test_the_decision_table_needs_nothing_but_the_standard_library() -> None:
    assert modules_loaded_by("import licensing.decision") == ["licensing"]


def test_the_client_package_never_imports_the_server() -> None:
    statement = "import licensing.client, licensing.cli, licensing.decision, licensing.snapshot"
    assert "licensing_server" not in modules_loaded_by(statement, refuse="licensing_server")


def test_the_client_and_the_decision_table_name_operations_as_the_proto_does() -> None:
    assert ClientOperation is licensing.decision.Operation
    for operation in licensing.decision.Operation:
        assert pb.Operation.Value("OPERATION_" + operation.name) == operation.value
