"""The docker backend's image inputs: package lists, requirements, content hash. No engine."""

from __future__ import annotations

import subprocess

import pytest

from testbed import image

WHEELS = ["asyncssh-2.24.1-py3-none-any.whl",
          "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl"]


def _hash(**changes: object) -> str:
    args: dict[str, object] = {
        "dockerfile": "FROM x\n", "packages": image.Packages(("curl", "lftp"), ("pure-ftpd",)),
        "requirements": ["asyncssh>=2.14"], "wheels": list(WHEELS), "base_id": "sha256:aa",
        "build_args": {"BASE": "debian:12"}}
    args.update(changes)
    return image.inputs_hash(**args)  # type: ignore[arg-type]


def test_hash_is_stable() -> None:
    assert _hash() == _hash()
    assert _hash(wheels=list(reversed(WHEELS))) == _hash()  # order of a folder listing
    assert len(_hash()) == 64
    assert image.image_ref(_hash()) == f"ftp-ssh-tunnel-testbed:{_hash()[:16]}"


@pytest.mark.parametrize("change", [
    {"dockerfile": "FROM y\n"},
    {"packages": image.Packages(("curl",), ("pure-ftpd",))},
    {"packages": image.Packages(("curl", "lftp"), ("pure-ftpd", "proftpd-core"))},
    {"requirements": ["asyncssh>=2.15"]},
    {"wheels": ["asyncssh-2.25.0-py3-none-any.whl", WHEELS[1]]},
    {"base_id": "sha256:bb"},
    {"build_args": {"BASE": "ftp-ssh-tunnel-base:bookworm"}},
])
def test_hash_changes_with_any_input(change: dict[str, object]) -> None:
    assert _hash(**change) != _hash()


def test_packages_are_what_ci_setup_installs() -> None:
    """The Python parse of ci/setup equals bash's own reading of its arrays."""
    listed = subprocess.run(["bash", str(image.CI_SETUP), "--list-packages"],
                            capture_output=True, text=True, check=True, timeout=30)
    apt_line, private_line = listed.stdout.splitlines()
    packages = image.setup_packages()
    assert packages.apt == tuple(apt_line.split())
    assert packages.private == tuple(private_line.split())
    assert {"openssh-server", "vsftpd", "lftp", "curl", "tcpdump"} <= set(packages.apt)
    assert packages.private == ("proftpd-core", "proftpd-mod-crypto", "pure-ftpd")


def test_bash_array_parse_allows_comments_and_lines() -> None:
    script = "X=1\nAPT_PACKAGES=(a b  # the a and b\n   c)\nPRIVATE_PACKAGES=(d)\n"
    assert image.setup_packages(script) == image.Packages(("a", "b", "c"), ("d",))
    with pytest.raises(image.ImageError):
        image.parse_bash_array("Y=(a)\n", "APT_PACKAGES")


def test_runtime_requirements_from_pyproject() -> None:
    names = [image._dist_name(r) for r in image.runtime_requirements()]
    assert names[0] == "asyncssh"
    assert set(names) == {"asyncssh", "prometheus-client", "pyftpdlib", "python-socks"}
    pyproject = ('[project]\nname="x"\ndependencies=["a>=1"]\n'
                 '[project.optional-dependencies]\ntestbed=["scapy", "Python_Socks>=2", '
                 '"pyftpdlib"]\n')
    assert image.runtime_requirements(pyproject) == ["a>=1", "Python_Socks>=2", "pyftpdlib"]
    with pytest.raises(image.ImageError, match="python-socks"):
        image.runtime_requirements('[project]\nname="x"\ndependencies=[]\n'
                                   '[project.optional-dependencies]\ntestbed=["pyftpdlib"]\n')


@pytest.mark.parametrize(("wheel", "fits"), [
    ("asyncssh-2.24.1-py3-none-any.whl", True),
    ("cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl", True),
    ("cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False),
    ("cffi-2.1.1-cp311-cp311-macosx_11_0_arm64.whl", False),
    ("cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.whl", False),
    ("x-1.0-cp311-abi3-manylinux_2_39_x86_64.whl", False),   # newer glibc than bookworm's
    ("x-1.0-cp37-abi3-manylinux_2_28_x86_64.whl", True),
])
def test_wheel_fits_debian_12(wheel: str, fits: bool) -> None:
    assert image.wheel_fits(wheel, "x86_64") is fits


def test_dockerfile_needs_no_index_and_no_repository() -> None:
    text = image.DOCKERFILE.read_text()
    assert "--no-index" in text
    copies = [line for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY wheelhouse /tmp/wheelhouse"]  # never the repository
