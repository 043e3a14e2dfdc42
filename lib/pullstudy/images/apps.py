"""The catalogue of real application images, in one place: what each holds, runs and prints when ready.

Why real images: a real container reads a small part of its image (HelloBench, FAST'16: 6.4 % of
the pulled data), which is what lazy pulling bets on; the synthetic images read everything. Each
image is layered as real images are, one layer per stage: a base (a minimal Debian, or busybox),
a runtime (the Debian packages the application needs) and the application (its script). They are
built here from Debian's package registry with mmdebstrap (:mod:`pullstudy.images.rootfs`, cached
by the hash of the definition) and pushed with the crafter's streaming push.

A container of an image is started with ``command``; it has done *useful work* when it prints the
``ready`` line (after loading its libraries and computing something with them).

- ``shell``: busybox with tzdata beside it (as many base images carry it), ``echo ready``: the
  smallest image, quick to build, used by the tests.
- ``python-data``: Debian minbase + python3-numpy and python3-pandas: import, build and aggregate a
  table.
- ``ml-torch``: Debian minbase + python3-torch: load the library, train a tiny model a few steps
  (the ``streaming-ml`` claim's kind of image).
- ``many-files``: Debian minbase + python3-sympy (thousands of small modules): import and solve.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Sequence

from pullstudy.records import image_tag
from .rootfs import DebianStage, FilesStage, build_layers, cache_dir, host_suite

READY = "ready"
REPOSITORY = "pullstudy/app-{name}"


@dataclass(frozen=True)
class AppImage:
    """An application image: its stages (bottom first), its command and the line that says it is ready."""

    name: str
    description: str
    stages: tuple
    command: tuple[str, ...]
    ready: str = READY
    timeout_s: float = 120.0   # a container that has not printed ``ready`` by then is stopped and recorded

    @property
    def definition_hash(self) -> str:
        """SHA-256 of everything that defines the image: its cache key and its tag."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()

    @property
    def repository(self) -> str:
        return REPOSITORY.format(name=self.name)



def _script(path: str, text: str) -> FilesStage:
    return FilesStage("application", ((path, text, 0o755),))


def _debian(packages: Sequence[str] = ()) -> DebianStage:
    # minbase: Essential packages and apt, as debian:*-slim images are
    return DebianStage("runtime" if packages else "base", "minbase", tuple(packages), suite=host_suite())


BUSYBOX = DebianStage("base", "extract", ("busybox-static", "tzdata"),
                      links=(("/bin/sh", "busybox"), ("/bin/sleep", "busybox"), ("/bin/cat", "busybox")),
                      suite=host_suite())

PYTHON_DATA = """\
import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
table = pd.DataFrame({"group": rng.integers(0, 100, 200_000), "value": rng.normal(size=200_000)})
summary = table.groupby("group")["value"].agg(["mean", "std", "count"])
assert len(summary) == 100
print("ready", float(summary["mean"].abs().max()), flush=True)
"""

ML_TORCH = """\
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(256, 16)
y = x.sum(dim=1, keepdim=True)
for step in range(20):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
print("ready", float(loss), flush=True)
"""

MANY_FILES = """\
import sympy

x = sympy.symbols("x")
roots = sympy.solve(x**2 - 2, x)
assert len(roots) == 2
print("ready", roots, flush=True)
"""

CATALOGUE: dict[str, AppImage] = {a.name: a for a in (
    AppImage("shell", "busybox (+ tzdata, unread): echo ready",
             (BUSYBOX, _script("/app/run.sh", "#!/bin/sh\necho ready\n")), ("/bin/sh", "/app/run.sh"), timeout_s=60),
    AppImage("python-data", "Debian + numpy/pandas: import, build and aggregate a table",
             (_debian(), _debian(["python3-numpy", "python3-pandas"]), _script("/app/main.py", PYTHON_DATA)),
             ("/usr/bin/python3", "/app/main.py")),
    AppImage("ml-torch", "Debian + python3-torch: load, train a tiny model 20 steps",
             (_debian(), _debian(["python3-torch"]), _script("/app/main.py", ML_TORCH)),
             ("/usr/bin/python3", "/app/main.py"), timeout_s=300),
    AppImage("many-files", "Debian + python3-sympy (thousands of small modules): import and solve",
             (_debian(), _debian(["python3-sympy"]), _script("/app/main.py", MANY_FILES)),
             ("/usr/bin/python3", "/app/main.py"), timeout_s=180),
)}
CI_APPS = ("shell",)           # small and quick to build: the tests use it
DEFAULT_APPS = tuple(CATALOGUE)  # `make run ... -p workload=apps`
ML_APP = "ml-torch"            # what the streaming-ml claim's row reports


def get(name: str) -> AppImage:
    if name not in CATALOGUE:
        raise ValueError(f"no application image {name!r}; the catalogue (pullstudy.images.apps) has: "
                         f"{', '.join(CATALOGUE)}")
    return CATALOGUE[name]


@dataclass(frozen=True)
class BuiltApp:
    app: AppImage
    layers: tuple          # rootfs.Layer, bottom first
    built: bool            # False: every layer came from the cache

    @property
    def blob_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def tar_bytes(self) -> int:
        return sum(layer.tar_bytes for layer in self.layers)


def build(name: str, cache=None, log=None) -> BuiltApp:
    """The image's layers, built from Debian packages where the cache lacks them."""
    app = get(name)
    layers = build_layers(app.stages, cache or cache_dir(), log=log)
    return BuiltApp(app, tuple(layers), any(layer.built for layer in layers))


def push(built: BuiltApp, registry: str, *, insecure: bool = True):
    """Push the built image to ``registry`` as ``pullstudy/app-<name>:<layers>-layers-size-<bytes>-bytes``
    (the crafter's streaming push). The tag is in the synthetic images' format, so that records of both
    are read alike; the definition's hash is a label."""
    from .crafter import push_layers

    app = built.app
    return push_layers(registry, app.repository, image_tag(len(built.layers), built.tar_bytes), built.layers, command=list(app.command),
                       labels={"org.pullstudy.app": app.name, "org.pullstudy.definition": app.definition_hash},
                       insecure=insecure)
