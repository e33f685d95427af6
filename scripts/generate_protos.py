"""Regenerate the Python code and .pyi stubs from protos/ (one command).

python scripts/generate_protos.py            # write client/licensing/v1/
python scripts/generate_protos.py --check    # fail if the committed code is stale
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT_ROOT = ROOT / "client"
GENERATED_DIR = Path("licensing") / "v1"


def generate(out_root: Path) -> list[Path]:
    # the mypy-protobuf plugins are console scripts installed beside this Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # ours only: the vendored google/ protos are there for other languages, while Python has
    # them from googleapis-common-protos, which generated code of ours must not shadow
    protos = sorted((PROTO_ROOT / GENERATED_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_root) for p in (out_root / GENERATED_DIR).glob("*_pb2*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed_dir = OUTPUT_ROOT / GENERATED_DIR
        committed = sorted(p.relative_to(OUTPUT_ROOT) for p in committed_dir.glob("*_pb2*"))
        if options.check:
            stale = [
                str(p)
                for p in sorted(set(fresh) | set(committed))
                if p not in fresh
                or p not in committed
                or not filecmp.cmp(Path(tmp) / p, OUTPUT_ROOT / p, shallow=False)
            ]
            if stale:
                print("generated code is stale; run: python scripts/generate_protos.py")
                print("\n".join(f"  {s}" for s in stale))
                return 1
            print(f"generated code matches the protos ({len(fresh)} files)")
            return 0
        for stale_file in committed:
            if stale_file not in fresh:
                (OUTPUT_ROOT / stale_file).unlink()
        for p in fresh:
            shutil.copyfile(Path(tmp) / p, OUTPUT_ROOT / p)
        print(f"wrote {len(fresh)} files to {committed_dir.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
