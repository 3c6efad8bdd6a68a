"""The runtime image with a real Docker engine, used the way the operators use it.

Builds ``Dockerfile`` on ``$FRAMEQC_BASE_IMAGE`` (CI builds a stand-in for
python:3.12-slim with ``.ci/base-image.sh``), starts it as the seed's README does, and
classifies from a cron-like shell with ``docker exec -i``. Skipped where there is no
Docker engine, except under CI, where that is a failure.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from frameqc.runtime.model.install import weights_file

from helpers import run_cli

pytestmark = pytest.mark.docker

ROOT = Path(__file__).parent.parent
BASE = os.environ.get("FRAMEQC_BASE_IMAGE", "python:3.12-slim")
MAX_OVER_BASE = 300 * 2**20


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
    return proc


def _engine_and_base() -> None:
    """Skip where there is no Docker engine or base image; under CI, fail."""
    usable = shutil.which("docker") and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=60).returncode == 0
    if not usable:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Docker engine answers (.ci/run starts dockerd)")
        pytest.skip("no Docker engine here")
    if docker("image", "inspect", BASE, check=False).returncode != 0:
        message = f"base image {BASE} is not here: build one with .ci/base-image.sh"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


@contextlib.contextmanager
def _built(*build_args: str) -> Iterator[str]:
    """The runtime image built with ``build_args``, removed afterwards with its stage."""
    _engine_and_base()
    tag = f"frameqc-test:{uuid.uuid4().hex[:8]}"
    stage = f"{tag}-build"  # the build stage, named: untagged, it stayed behind (445 MB)
    args = [a for b in ("BASE_IMAGE=" + BASE, *build_args) for a in ("--build-arg", b)]
    try:
        for target, name in ((["--target", "build"], stage), ([], tag)):
            docker("build", "-q", *args, *target, "-t", name, str(ROOT), timeout=1200)
        yield tag
    finally:
        docker("rmi", "-f", tag, stage, check=False)


@pytest.fixture(scope="module")
def image():
    with _built() as tag:
        yield tag


@pytest.fixture(scope="module")
def openvino_image(image):
    """The image with the openvino extra (its layers up to the install shared with image's)."""
    with _built("EXTRAS=openvino") as tag:
        yield tag


@pytest.fixture(scope="module")
def mounts(exported, fits_dir, tmp_path_factory):
    """A models folder with model.onnx and an incoming folder, readable by the image's user."""
    models = tmp_path_factory.mktemp("models")
    incoming = tmp_path_factory.mktemp("incoming")
    int8 = exported["int8"]
    shutil.copy(int8, models / int8.name)
    data = weights_file(int8)
    shutil.copy(data, models / data.name)
    (models / "model.onnx").symlink_to(int8.name)  # as the README deploys a model
    for name in ("full_good.fits", "full_shutter.fits", "fpacked.fits.fz"):
        shutil.copy(fits_dir / name, incoming / name)
    for d in (models, incoming):
        d.chmod(0o755)
    return models, incoming


@pytest.fixture(scope="module")
def container(image, mounts):
    models, incoming = mounts
    name = f"frameqc-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-id", "--name", name, "-v", f"{models}:/models:ro",
           "-v", f"{incoming}:/data/incoming:ro", image)
    try:
        deadline = time.monotonic() + 120
        while docker("exec", name, "frameqc", "status", check=False).returncode != 0:
            if time.monotonic() > deadline:
                logs = docker("logs", name, check=False)
                raise AssertionError(f"server did not come up: {logs.stderr[-2000:]}")
            time.sleep(1)
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def cron(command: str) -> subprocess.CompletedProcess:
    """As cron runs a line: empty environment, no TTY, stdin closed."""
    return subprocess.run(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c",
                           command], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_cron_docker_exec_classifies(container, exported, fits_dir):
    proc = cron(f"docker exec -i {container} frameqc classify /data/incoming/full_good.fits")
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"(\d \d\.\d{1,3} \S+) /data/incoming/full_good.fits\n", proc.stdout)
    assert m, proc.stdout
    _, local, _ = run_cli("classify", "--model", str(exported["int8"]),
                          str(fits_dir / "full_good.fits"))
    assert local.rsplit(" ", 1)[0] == m.group(1)
    status = docker("exec", container, "frameqc", "status", "--json").stdout
    assert '"frames": 1' in status  # answered by the resident server


def test_directory_and_failures_from_cron(container):
    proc = cron(f"docker exec -i {container} frameqc classify --format csv /data/incoming "
                "/data/incoming/missing.fits")
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 5  # header, three frames, the missing one
    assert "missing.fits" in proc.stderr and "Traceback" not in proc.stderr


def test_no_torch_not_root_healthcheck(container, image):
    assert docker("exec", container, "python", "-c", "import torch", check=False).returncode != 0
    assert docker("exec", container, "id", "-u").stdout.strip() != "0"
    health = docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", image).stdout
    assert "status" in health
    labels = docker("inspect", "-f", "{{json .Config.Labels}}", image).stdout
    assert "org.opencontainers.image.title" in labels


def test_image_size_over_base(image):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    base = int(docker("image", "inspect", "-f", "{{.Size}}", BASE).stdout)
    print(f"runtime image {size / 2**20:.0f} MiB, {(size - base) / 2**20:.0f} MiB over its base")
    assert size - base <= MAX_OVER_BASE


def test_the_openvino_image_runs_the_model_on_openvino(openvino_image, image, mounts,
                                                       exported, fits_dir):
    """``--build-arg EXTRAS=openvino``: OpenVINO, its plugins pruned to the CPU's and its
    ONNX reader, decides a frame within the card's bound of fp32; its size over the base
    and over the image without it."""
    from frameqc.runtime.model.peek import read_card

    models, incoming = mounts
    proc = docker("run", "--rm", "-v", f"{models}:/models:ro", "-v",
                  f"{incoming}:/data/incoming:ro", openvino_image, "frameqc", "classify",
                  "--engine", "openvino", "-f", "json", "/data/incoming/full_good.fits")
    got = json.loads(proc.stdout)
    assert got["engine"] == "openvino" and got["precision"] == "int8", got
    _, out, _ = run_cli("classify", "--model", str(exported["fp32"]), "-f", "json",
                        str(fits_dir / "full_good.fits"))
    ref = json.loads(out)["probabilities"]
    margin = read_card(exported["int8"]).margin
    assert max(abs(got["probabilities"][k] - ref[k]) for k in ref) <= margin
    sizes = [int(docker("image", "inspect", "-f", "{{.Size}}", i).stdout)
             for i in (openvino_image, image, BASE)]
    print(f"openvino image {sizes[0] / 2**20:.0f} MiB: {(sizes[0] - sizes[2]) / 2**20:.0f} "
          f"MiB over its base, {(sizes[0] - sizes[1]) / 2**20:.0f} MiB over the plain image")
    assert sizes[0] - sizes[2] <= MAX_OVER_BASE + 150 * 2**20


def test_classify_without_the_server(image, mounts):
    """A cold one-shot as the image's user (no home): its line, and nothing on stderr
    (onnxruntime's telemetry warned there that it could not keep its device id)."""
    models, incoming = mounts
    proc = docker("run", "--rm", "-v", f"{models}:/models:ro", "-v",
                  f"{incoming}:/data/incoming:ro", image, "frameqc", "classify",
                  "/data/incoming/fpacked.fits.fz")
    assert re.fullmatch(r"\d \d\.\d{1,3} \S+ /data/incoming/fpacked.fits.fz\n", proc.stdout)
    assert proc.stderr == ""


def test_image_keeps_its_bytecode(image):
    """Every docker exec one-shot is a new interpreter: without bytecode it compiled
    numpy, onnxruntime and frameqc from source each time."""
    script = ("import os, numpy, onnxruntime, frameqc.runtime.cli as cli; "
              "print(all(os.path.exists(m.__cached__) for m in (numpy, onnxruntime, cli)))")
    assert docker("run", "--rm", image, "python", "-c", script).stdout.strip() == "True"


def test_docker_stop_is_clean(image, mounts):
    models, _ = mounts
    name = f"frameqc-stop-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-v", f"{models}:/models:ro", image)
    try:
        deadline = time.monotonic() + 120
        while docker("exec", name, "frameqc", "status", check=False).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(1)
        t0 = time.monotonic()
        docker("stop", "-t", "20", name)
        assert time.monotonic() - t0 < 15
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert "stopped after" in docker("logs", name).stderr
    finally:
        docker("rm", "-f", name, check=False)
