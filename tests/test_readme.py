"""The README's shell examples, run as written (only the address changes) against real servers."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from conftest import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

README = Path(__file__).resolve().parent.parent / "README.md"
README_ADDRESS = "127.0.0.1:7443"
COMMAND_TIMEOUT = 120.0


def shell_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def block_with(text: str) -> str:
    """The one shell block of the README that contains `text`."""
    [block] = [block for block in shell_blocks() if text in block]
    return block


def commands(block: str) -> list[str]:
    """The block's commands, each on one line (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def clean_environment(address: str) -> dict[str, str]:
    """A new terminal: none of the server's LICENSING_* variables. Only the address differs
    from the README's, and licensectl is told it the way an operator would."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LICENSING_", "GRPC_"))}
    environ["LICENSING_SERVER"] = address
    return environ


def in_a_working_directory(directory: Path) -> Path:
    """A directory like the README's: the project's virtual environment as `.venv`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".venv").symlink_to(Path(sys.prefix))
    return directory


@contextmanager
def readme_server(block: str, directory: Path) -> Iterator[str]:
    """The server as the README block starts it (its exports, then its command) on a free port;
    yields the address."""
    variables: dict[str, str] = {}
    command: list[str] = []
    for line in commands(block):
        words = shlex.split(line.split("&&")[-1])
        if words[0] == "export":
            variables.update(word.split("=", 1) for word in words[1:])
        else:
            command = words
    address = f"127.0.0.1:{free_port()}"
    environ = {**clean_environment(address), **variables, "LICENSING_LISTEN": address}
    with (directory / "server.log").open("wb") as log:
        server = subprocess.Popen(
            command, cwd=directory, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_serving(address, server)
        yield address
    finally:
        server.terminate()
        server.wait(30)


def wait_serving(address: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"the server is not serving after {timeout} s")


def second_terminal(script: str, directory: Path, address: str) -> subprocess.CompletedProcess[str]:
    """A README block run by bash in a new terminal, stopping at the first failing command."""
    return subprocess.run(
        ["bash", "-e", "-c", script.replace(README_ADDRESS, address)],
        cwd=directory,
        env=clean_environment(address),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_the_token_example_works_in_a_second_terminal(tmp_path: Path) -> None:
    directory = in_a_working_directory(tmp_path / "work")
    server_block = block_with("export LICENSING_ADMIN_TOKEN=s3cret LICENSING_GATEWAY_TOKEN")
    client_block = block_with('-H "authorization: Bearer $LICENSING_ADMIN_TOKEN"')
    licensectl_only = "\n".join(c for c in commands(client_block) if not c.startswith("grpcurl"))
    with readme_server(server_block, directory) as address:
        result = second_terminal(licensectl_only, directory, address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Deployment ID")
