"""protos/ is the whole contract: it compiles on its own, with nothing but protoc's well-known
types, for any language."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

PROTOS = Path(__file__).resolve().parent.parent / "protos"
# google/protobuf/*.proto, which every protoc ships
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"


def protoc(*args: str) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{WELL_KNOWN}",
            *args,
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def compiled_files(descriptor_set: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    return {file.name: file for file in files}


def without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc fills in json_name; the descriptors built into generated code leave it out."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        without_json_names(message.nested_type)


def test_the_protos_compile_on_their_own_into_python_and_a_descriptor_set(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.mkdir()
    protoc(f"--python_out={python}", f"--pyi_out={python}", f"--grpc_python_out={python}")
    generated = {str(p.relative_to(python)) for p in python.rglob("*.py*")}
    assert {
        "licensing/v1/licensing_pb2.py",
        "licensing/v1/licensing_pb2_grpc.py",
        "google/rpc/status_pb2.py",
        "google/rpc/error_details_pb2.py",
    } <= generated

    # what every other language's protoc plugin is handed
    descriptor_set = tmp_path / "licensing.binpb"
    protoc(f"--descriptor_set_out={descriptor_set}", "--include_imports")
    files = compiled_files(descriptor_set)
    assert {"licensing/v1/licensing.proto", "google/rpc/status.proto"} <= files.keys()
    messages = {message.name for message in files["google/rpc/error_details.proto"].message_type}
    assert "ErrorInfo" in messages


def test_the_vendored_google_rpc_protos_are_those_the_python_runtime_reads(
    tmp_path: Path,
) -> None:
    descriptor_set = tmp_path / "licensing.binpb"
    protoc(f"--descriptor_set_out={descriptor_set}")
    files = compiled_files(descriptor_set)
    for module in (status_pb2, error_details_pb2):
        runtime = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(runtime)
        vendored = files[runtime.name]
        without_json_names(vendored.message_type)
        assert vendored == runtime, runtime.name
