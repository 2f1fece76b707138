"""Real Flower processes on 127.0.0.1: one SuperLink, one SuperNode per client, ``flwr run``.

:func:`run_loopback` writes a small Flower App into ``RUN/flower-app`` (a ``pyproject.toml``
naming metarec's ServerApp and ClientApp, with the run's config path as its run config),
starts ``flower-superlink`` and ``flower-supernode --node-config partition-id=<i>`` as separate
processes, each in its own process group, submits the app with ``flwr run --stream`` and always
tears every one of them (and the processes Flower starts from them) down (also on error or
timeout). ``FLWR_HOME`` points into the run directory so that nothing is written to the user's
Flower home, and Flower's
telemetry is off unless ``FLWR_TELEMETRY_ENABLED`` is set. The processes find metarec
through ``PYTHONPATH`` (this package's parent directory is prepended). Logs go to
``RUN/flower-logs/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from metarec.config.federated import FederatedConfig

__all__ = ["run_loopback", "write_app"]

_APP_MODULE = "metarec_flower_app"


def _bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def write_app(
    folder: Path,
    config_path: str,
    out: Path,
    n_clients: int,
    *,
    resume: bool,
    stop_after: int | None,
) -> Path:
    """The Flower App directory ``flwr run`` submits."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{_APP_MODULE}.py").write_text(
        '"""Flower App of one metarec federated run (generated)."""\n'
        "from metarec.federated.flower import make_client_app, make_server_app\n\n"
        f"client = make_client_app({config_path!r})\n"
        f"server = make_server_app({config_path!r}, {str(out)!r}, {n_clients}, "
        f"resume={resume!r}, stop_after={stop_after!r})\n"
    )
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "metarec-federated-run"\nversion = "1.0.0"\ndescription = "metarec '
        'federated run"\n'
        'license = "MIT"\ndependencies = []\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n\n'
        '[tool.flwr.app]\npublisher = "metarec"\n\n'
        f'[tool.flwr.app.components]\nserverapp = "{_APP_MODULE}:server"\nclientapp = '
        f'"{_APP_MODULE}:client"\n\n'
        f"[tool.flwr.app.config]\nconfig = {config_path!r}\n"
    )
    return folder


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_port(port: int, deadline: float, proc: subprocess.Popen, log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with status {proc.returncode}; see {log}")
        if not _port_free(port):
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"flower-superlink did not open 127.0.0.1:{port} within startup_timeout; see {log}"
    )


def _descendants(pids: list[int]) -> list[int]:
    """Every live descendant of ``pids`` (Linux ``/proc``; empty elsewhere). Flower starts its
    SuperExec and app processes detached, in their own sessions, so a process group kill alone
    would leave them running."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], list(pids)
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM our processes and all their descendants, then SIGKILL what is left after 5 s."""
    mine = [p.pid for p in procs]
    everyone = mine + _descendants(mine)
    for pid in everyone:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
    for pid in everyone + _descendants(mine):
        _signal(pid, signal.SIGKILL)
    for p in procs:
        p.wait(timeout=5)


def run_loopback(
    config_path: str,
    out: Path,
    n_clients: int,
    fed: FederatedConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    run_timeout: float | None = None,
) -> None:
    """Run the federation on real Flower processes on 127.0.0.1 (ports ``fed.port`` onwards).

    Raises:
        RuntimeError / TimeoutError: a process failed to start, or ``flwr run`` failed or ran
            past ``run_timeout`` (default: startup + rounds x round timeout); every process is
            stopped first.
    """
    out = Path(out)
    logs = out / "flower-logs"
    logs.mkdir(parents=True, exist_ok=True)
    home = out / "flower-home"
    home.mkdir(exist_ok=True)
    link = fed.port
    ports = [link] + [link + 1 + i for i in range(n_clients)]
    busy = [p for p in ports if not _port_free(p)]
    if busy:
        raise RuntimeError(
            f"port(s) {busy} on 127.0.0.1 are in use; pass --set federated.port=<free port>"
        )
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = '
        f'"127.0.0.1:{link}"\ninsecure = true\n'
    )
    app = write_app(
        out / "flower-app", config_path, out, n_clients, resume=resume, stop_after=stop_after
    )
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {
        "FLWR_TELEMETRY_ENABLED": "0",
        **os.environ,
        "PATH": path,
        "FLWR_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    procs: list[subprocess.Popen] = []
    files: list[IO[bytes]] = []

    def start(cmd: list[str], log: Path) -> subprocess.Popen:
        f = log.open("wb")
        files.append(f)
        p = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(out), start_new_session=True
        )
        procs.append(p)
        return p

    limit = run_timeout or (
        fed.startup_timeout + fed.rounds * (fed.round_timeout + 5) + 2 * fed.round_timeout + 60
    )
    try:
        deadline = time.monotonic() + fed.startup_timeout
        sl = start(
            [
                _bin("flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(link),
            ],
            logs / "superlink.log",
        )
        _wait_port(link, deadline, sl, logs / "superlink.log")
        for i in range(n_clients):
            start(
                [
                    _bin("flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link}",
                    "--port",
                    str(link + 1 + i),
                    "--node-config",
                    f"partition-id={i}",
                ],
                logs / f"supernode-{i}.log",
            )
        with (logs / "flwr-run.log").open("wb") as f:
            run = subprocess.run(
                [_bin("flwr"), "run", str(app), "loopback", "--stream"],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(out),
                timeout=limit,
                start_new_session=True,
            )
        if run.returncode != 0:
            raise RuntimeError(
                f"flwr run exited with status {run.returncode}; see {logs / 'flwr-run.log'}"
            )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"flwr run did not finish within {limit:.0f} s; see {logs}") from None
    finally:
        _stop(procs)
        for log_file in files:
            log_file.close()
