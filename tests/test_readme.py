"""The README's shell examples, run as written (only the address changes) against real servers."""

from __future__ import annotations

import json
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
from conftest import GRPCURL, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

README = Path(__file__).resolve().parent.parent / "README.md"
README_ADDRESS = "127.0.0.1:7443"
COMMAND_TIMEOUT = 120.0
# printed before each command of a block, to tell their outputs apart
MARK = "----- next README command -----"


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
    """A new terminal: none of the server's LICENSING_* variables, and the real grpcurl on the
    PATH. Only the address differs from the README's; licensectl is told it the way an operator
    would."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LICENSING_", "GRPC_"))}
    environ["LICENSING_SERVER"] = address
    environ["PATH"] = f"{Path(GRPCURL).parent}{os.pathsep}{environ.get('PATH', '')}"
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


def run_each(block: str, directory: Path, address: str) -> dict[str, str]:
    """A README block in one shell, as a person pastes it: what each command printed."""
    block_commands = commands(block)
    marked = "\n".join(f"echo '{MARK}'\n{command}" for command in block_commands)
    result = second_terminal(marked, directory, address)
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split(MARK + "\n")[1:]
    assert len(outputs) == len(block_commands), result.stdout
    return dict(zip(block_commands, outputs, strict=True))


def printed_by(printed: dict[str, str], *words: str) -> str:
    [output] = [out for command, out in printed.items() if all(w in command for w in words)]
    return output


def test_the_first_run_walkthrough_and_its_grpcurl_commands_work_as_written(
    tmp_path: Path,
) -> None:
    directory = in_a_working_directory(tmp_path / "work")
    fresh_machine = block_with("pip install ./client . && .venv/bin/license-server --dev")
    with readme_server(fresh_machine, directory) as address:
        walkthrough = second_terminal(block_with("DEPLOYMENT_ID=$("), directory, address)
        assert walkthrough.returncode == 0, walkthrough.stderr
        assert "License DEV-0001 applied." in walkthrough.stdout

        printed = run_each(block_with("grpcurl -plaintext 127.0.0.1:7443 list"), directory, address)

    assert "licensing.v1.LicenseService" in printed_by(printed, " list").split()
    assert "rpc CheckWrite" in printed_by(printed, "describe licensing.v1.LicenseService")
    assert "deployment_id" in printed_by(printed, "describe licensing.v1.GetStatusResponse")
    assert json.loads(printed_by(printed, "/Validate"))["valid"] is True
    # the walkthrough uploaded it already: the same license again changes nothing
    assert json.loads(printed_by(printed, "/Upload"))["unchanged"] is True
    status = json.loads(printed_by(printed, "/GetStatus"))
    assert status["license"]["serial_number"] == "DEV-0001"
    decision = json.loads(printed_by(printed, "/CheckWrite"))
    assert (decision["allowed"], decision["reason"]) == (True, "DECISION_REASON_LICENSED")
    assert json.loads(printed_by(printed, "Health/Check")) == {"status": "SERVING"}


def test_the_token_example_works_in_a_second_terminal(tmp_path: Path) -> None:
    directory = in_a_working_directory(tmp_path / "work")
    server_block = block_with("export LICENSING_ADMIN_TOKEN=s3cret LICENSING_GATEWAY_TOKEN")
    client_block = block_with('-H "authorization: Bearer $LICENSING_ADMIN_TOKEN"')
    grpcurl_status = next(c for c in commands(client_block) if c.startswith("grpcurl"))
    with readme_server(server_block, directory) as address:
        printed = run_each(client_block, directory, address)
        # the variable is the second terminal's own: without its export the token is empty
        unexported = second_terminal(grpcurl_status, directory, address)

    assert json.loads(printed_by(printed, "grpcurl", "GetStatus"))["deployment_id"]
    assert printed_by(printed, "licensectl status").startswith("Deployment ID")
    assert unexported.returncode != 0
    assert "Unauthenticated" in unexported.stderr
