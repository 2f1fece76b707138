"""The repository's ``Dockerfile`` builds an image that serves a trained run: ``/ready`` answers
200, ``/recommend`` needs the token and answers. Needs a running Docker daemon (and network for
the image's packages): skipped without one; slow."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _helpers import COLD_START, TINY_RUN

from metarec.config import load_scenario
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent


def _daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def test_the_dockerfile_is_the_documented_recipe() -> None:
    """Fast and always run: the image serves /run-dir on 0.0.0.0:8000 as a non-root user, with a
    readiness health check, and only the package goes into the build context."""
    text = (ROOT / "Dockerfile").read_text()
    assert '"metarec", "serve", "--run", "/run-dir", "--host", "0.0.0.0"' in text
    assert "USER metarec" in text and "/ready" in text and ".[serve]" in text
    assert (ROOT / ".dockerignore").read_text().splitlines()[1] == "*"


@pytest.mark.slow
@pytest.mark.skipif(
    not _daemon(), reason="no Docker daemon here: build the image by hand (README, Deployment)"
)
def test_the_image_builds_and_serves_a_run(tmp_path) -> None:
    tag = "metarec-serve:test"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=3600)
    run = tmp_path / "run"
    train(load_scenario(COLD_START, TINY_RUN), run, evaluate_test=False)
    (tmp_path / "token").write_text("docker-token\n")
    name = f"metarec-test-{int(time.time())}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8000"]
        + ["-v", f"{run}:/run-dir:ro", "-v", f"{tmp_path / 'token'}:/token:ro"]
        + [tag, "--token-file", "/token"],
        check=True,
        timeout=120,
    )
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "8000"], capture_output=True, text=True, check=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        body = json.dumps({"user": "new", "k": 3}).encode()
        req = urllib.request.Request(
            url + "/recommend", body, {"Authorization": "Bearer docker-token"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200 and len(json.loads(r.read())["items"]) == 3
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url + "/recommend", body), timeout=30)
        assert e.value.code == 401
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
