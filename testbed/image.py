"""The docker backend's image, built where nothing can be pulled and no index is reachable.

`ensure_image()` returns a reference such as `ftp-ssh-tunnel-testbed:<hash16>` and builds the
image only when no image carries that content hash. The hash covers every input: the
Dockerfile, ci/setup's package lists (read out of ci/setup: one source of truth), the wheel
file names and the base image's id. An unchanged image is reused in well under a second of
engine work; a changed input gives a new tag.

- Base: `debian:12` if the engine has it or can pull it within a short timeout, else
  `ftp-ssh-tunnel-base:bookworm` made with `debootstrap --variant=minbase` on the host (root)
  and imported; that base is reused once it exists.
- Python: the runtime dependencies of what runs inside containers (the proxy, pyftpdlib,
  python-socks) go to /opt/fts-venv from a wheelhouse built on the host with `pip wheel`; the
  build runs `pip install --no-index`. The project's code is not in the image: containers
  mount the repository at its host path and run it with PYTHONPATH.
- Context: a temporary folder with the Dockerfile and the wheelhouse only, so the
  repository's size (.venv, out/, .git) never reaches the engine.

Everything goes through the Docker SDK (`docker.from_env()`), not the docker CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "testbed" / "docker" / "Dockerfile"
CI_SETUP = REPO / "ci" / "setup"
PYPROJECT = REPO / "pyproject.toml"

REPOSITORY = "ftp-ssh-tunnel-testbed"
BASE_REPOSITORY, BASE_TAG = "ftp-ssh-tunnel-base", "bookworm"
BASE_REF = f"{BASE_REPOSITORY}:{BASE_TAG}"
UPSTREAM_BASE = "debian:12"
DEBIAN_MIRROR = os.environ.get("FTS_DEBIAN_MIRROR", "http://deb.debian.org/debian")

LABEL = "org.ftp-ssh-tunnel"                   # = "testbed" or "base"
INPUTS_LABEL = "org.ftp-ssh-tunnel.inputs"     # = the content hash
# Runtime dependencies inside containers beyond pyproject's `dependencies` (the proxy's):
# the FTP server and the ftplib client's SOCKS support, taken from the testbed extra.
TEST_EXTRA_RUNTIME = ("pyftpdlib", "python-socks")
PULL_TIMEOUT = 20.0

Log = Callable[[str], None]


class ImageError(RuntimeError):
    """The image cannot be built here; the message says why and what to do."""


# --- pure parts: inputs and their hash ------------------------------------------------------

def parse_bash_array(script: str, name: str) -> list[str]:
    """The words of `NAME=(...)` in a bash script (comments and line breaks allowed)."""
    match = re.search(rf"^{re.escape(name)}=\((.*?)\)", script, re.MULTILINE | re.DOTALL)
    if match is None:
        raise ImageError(f"{CI_SETUP}: no {name}=(...) array")
    words: list[str] = []
    for line in match.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return words


@dataclass(frozen=True)
class Packages:
    apt: tuple[str, ...]        # installed with apt
    private: tuple[str, ...]    # unpacked under /opt/ftp-ssh-tunnel/pkgs


def setup_packages(script: str | None = None) -> Packages:
    """ci/setup's APT_PACKAGES and PRIVATE_PACKAGES."""
    text = CI_SETUP.read_text() if script is None else script
    return Packages(tuple(parse_bash_array(text, "APT_PACKAGES")),
                    tuple(parse_bash_array(text, "PRIVATE_PACKAGES")))


def _dist_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ImageError(f"{PYPROJECT}: cannot read requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: str | None = None) -> list[str]:
    """pyproject's `dependencies` plus pyftpdlib and python-socks from the testbed extra."""
    data = tomllib.loads(PYPROJECT.read_text() if pyproject is None else pyproject)
    project = data["project"]
    wanted = {_dist_name(n) for n in TEST_EXTRA_RUNTIME}
    extra = [r for r in project.get("optional-dependencies", {}).get("testbed", [])
             if _dist_name(r) in wanted]
    missing = wanted - {_dist_name(r) for r in extra}
    if missing:
        raise ImageError(f"{PYPROJECT}: the testbed extra lacks {', '.join(sorted(missing))}")
    return [*project.get("dependencies", []), *extra]


def inputs_hash(dockerfile: str, packages: Packages, requirements: Sequence[str],
                wheels: Iterable[str], base_id: str, build_args: dict[str, str] | None = None
                ) -> str:
    """The content hash of everything the image is made of (64 hex digits)."""
    doc = {"dockerfile": dockerfile, "apt": list(packages.apt),
           "private": list(packages.private), "requirements": list(requirements),
           "wheels": sorted(wheels), "base": base_id, "args": dict(sorted((build_args or {})
                                                                         .items()))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def image_ref(digest: str) -> str:
    return f"{REPOSITORY}:{digest[:16]}"


def wheel_fits(filename: str, machine: str) -> bool:
    """Whether a wheel installs on Debian 12's CPython 3.11 on `machine` (x86_64, aarch64)."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) < 5:
        return False
    pythons, abis, platforms = (set(p.split(".")) for p in parts[-3:])
    python_ok = bool(pythons & {"py3", "py311", "cp311"}) or (
        "abi3" in abis and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= 11
                               for p in pythons))
    abi_ok = bool(abis & {"none", "abi3", "cp311"})
    platform_ok = "any" in platforms or any(
        p.endswith(machine) and (p.startswith("manylinux") or p.startswith("linux_"))
        and not _needs_newer_glibc(p) for p in platforms)
    return python_ok and abi_ok and platform_ok


def _needs_newer_glibc(tag: str) -> bool:
    match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    return match is not None and (int(match.group(1)), int(match.group(2))) > (2, 36)


# --- the engine -----------------------------------------------------------------------------

def client(timeout: float = 600) -> Any:
    """A Docker SDK client, or ImageError with the reason (`no Docker engine (...)`)."""
    try:
        import docker
    except ImportError as exc:
        raise ImageError("no Docker engine (the `docker` Python package is missing: "
                         "pip install docker, or run ci/setup)") from exc
    try:
        engine = docker.from_env(timeout=int(timeout))
        engine.ping()
    except Exception as exc:
        raise ImageError(f"no Docker engine ({exc})") from exc
    return engine


def _find(engine: Any, ref: str) -> Any | None:
    import docker

    try:
        return engine.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def ensure_base(engine: Any, log: Log = print) -> str:
    """The base image's reference: debian:12 if present or pullable, else a debootstrap."""
    for ref in (UPSTREAM_BASE, BASE_REF):
        if _find(engine, ref) is not None:
            return ref
    log(f"image: pulling {UPSTREAM_BASE} (at most {PULL_TIMEOUT:.0f} s)")
    try:
        puller = client(timeout=PULL_TIMEOUT)
        puller.images.pull("debian", tag="12")
        return UPSTREAM_BASE
    except Exception as exc:
        log(f"image: cannot pull {UPSTREAM_BASE} ({str(exc).splitlines()[0][-200:]}); "
            "making the base with debootstrap")
    debootstrap_base(engine, log)
    return BASE_REF


def debootstrap_base(engine: Any, log: Log = print) -> None:
    """`debootstrap --variant=minbase bookworm` on the host, imported as BASE_REF."""
    if sys.platform != "linux" or os.geteuid() != 0:
        raise ImageError("no registry answers and debootstrap needs root on Linux: run "
                         f"`testbed image build` once as root, or `docker pull {UPSTREAM_BASE}` "
                         "where a registry is reachable")
    if shutil.which("debootstrap") is None:
        raise ImageError("no registry answers and debootstrap is missing (ci/setup installs it)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fts-base-", dir="/var/tmp") as tmp:
        root, tarball = Path(tmp) / "root", Path(tmp) / "root.tar"
        log(f"image: debootstrap --variant=minbase bookworm from {DEBIAN_MIRROR}")
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root),
                               DEBIAN_MIRROR], capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError("debootstrap failed:\n" + (done.stdout + done.stderr)[-3000:])
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        with tarfile.open(tarball, "w") as tar:
            tar.add(root, arcname=".")  # device nodes, owners and modes are kept
        log(f"image: importing the base ({tarball.stat().st_size >> 20} MiB)")
        engine.api.import_image(src=str(tarball), repository=BASE_REPOSITORY, tag=BASE_TAG,
                                changes=[f"LABEL {LABEL}=base", 'CMD ["bash"]'])
    log(f"image: base {BASE_REF} ready in {time.monotonic() - started:.0f} s")


def build_wheelhouse(requirements: Sequence[str], into: Path, machine: str) -> list[str]:
    """Wheels for the requirements, made on the host with the running Python's pip; wheels
    that do not fit the container (another OS, Python or CPU) are fetched for it instead."""
    into.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run([*pip, "wheel", "-q", "-w", str(into), *requirements],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError("pip wheel failed:\n" + (done.stdout + done.stderr)[-3000:])
    for wheel in sorted(into.glob("*.whl")):
        if wheel_fits(wheel.name, machine):
            continue
        name, version = wheel.name.split("-")[:2]
        wheel.unlink()
        fetched = subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(into),
             "--python-version", "3.11", "--implementation", "cp",
             "--platform", f"manylinux_2_36_{machine}", "--platform", f"manylinux2014_{machine}",
             f"{name}=={version}"], capture_output=True, text=True)
        if fetched.returncode != 0:
            raise ImageError(f"no wheel of {name} {version} for CPython 3.11 on Linux "
                             f"{machine}:\n" + fetched.stderr[-2000:])
    (into / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    return sorted(w.name for w in into.glob("*.whl"))


def _engine_machine(engine: Any) -> str:
    arch = str(engine.info().get("Architecture") or platform.machine())
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def find_image(engine: Any, digest: str) -> Any | None:
    """An image built from these inputs, the one tagged with them first."""
    images = engine.images.list(filters={"label": f"{INPUTS_LABEL}={digest}"})
    images.sort(key=lambda i: image_ref(digest) not in i.tags)
    return images[0] if images else None


@contextlib.contextmanager
def _one_builder() -> Iterator[None]:
    """One build at a time on this machine (pytest-xdist workers all ask at once)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, at worst two builds of the same image
        yield
        return
    with open(Path(tempfile.gettempdir()) / "ftp-ssh-tunnel-image.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_image(log: Log = print, force: bool = False) -> str:
    """The testbed image's reference; builds it only if no image has these inputs' hash.
    `force` rebuilds without the engine's layer cache (the base is kept)."""
    engine = client()
    with _one_builder():
        return _ensure_image(engine, log, force)


def _ensure_image(engine: Any, log: Log, force: bool) -> str:
    base_ref = ensure_base(engine, log)
    base_id = engine.images.get(base_ref).id
    dockerfile = DOCKERFILE.read_text()
    packages = setup_packages()
    requirements = runtime_requirements()
    build_args = {"BASE": base_ref, "APT_PACKAGES": " ".join(packages.apt),
                  "PRIVATE_PACKAGES": " ".join(packages.private),
                  "DEBIAN_MIRROR": DEBIAN_MIRROR}
    with tempfile.TemporaryDirectory(prefix="fts-image-") as tmp:
        context = Path(tmp)
        wheels = build_wheelhouse(requirements, context / "wheelhouse", _engine_machine(engine))
        digest = inputs_hash(dockerfile, packages, requirements, wheels, base_id, build_args)
        ref = image_ref(digest)
        existing = None if force else find_image(engine, digest)
        if existing is not None:
            if ref not in existing.tags:
                existing.tag(REPOSITORY, digest[:16])
            return ref
        (context / "Dockerfile").write_text(dockerfile)
        log(f"image: building {ref} (base {base_ref})")
        _build(engine, context, ref, build_args,
               {LABEL: "testbed", INPUTS_LABEL: digest}, nocache=force, log=log)
        # A forced rebuild leaves the previous image untagged: drop it.
        engine.images.prune(filters={"dangling": True, "label": f"{LABEL}=testbed"})
    return ref


def _build(engine: Any, context: Path, ref: str, build_args: dict[str, str],
           labels: dict[str, str], nocache: bool, log: Log) -> None:
    last: list[str] = []
    for chunk in engine.api.build(path=str(context), tag=ref, buildargs=build_args,
                                  labels=labels, rm=True, forcerm=True, pull=False,
                                  nocache=nocache, decode=True):
        if "error" in chunk:
            tail = "".join(last[-30:])
            raise ImageError(f"building {ref} failed: {chunk['error'].strip()}\n{tail}")
        text = chunk.get("stream", "")
        if text:
            last.append(text)
            if text.startswith("Step "):
                step = " ".join(text.split())
                log("image: " + (step if len(step) <= 120 else step[:117] + "..."))
