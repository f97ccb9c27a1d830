"""examples/multiprocess.py: two ``jax.distributed`` processes on loopback train with the
optimizer state sliced between them, checkpoint halfway, resume; no worker process and
no port outlives the launcher, whether the run succeeds or fails."""

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.quick import quick_environment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "multiprocess.py"


def launch(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, list[int], list[int]]:
    """Run the launcher (in a process group of its own, killed if it overruns ``timeout``);
    ``(result, worker pids, ports)`` from its ``worker <pid> ... port <port>`` lines."""
    # XLA compiles quickly in every process: each run is compared with runs of the same
    # settings; the processes have several devices, where the kernels are never used
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = quick_environment(kernels=True, PYTHONPATH=pythonpath)
    launcher = subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    workers = re.findall(r"^worker (\d+) \w+ rank \d+ port (\d+)$", stderr, re.MULTILINE)
    result = subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)
    return result, [int(pid) for pid, _ in workers], sorted({int(port) for _, port in workers})


def assert_cleaned_up(pids: list[int], ports: list[int]) -> None:
    """No worker process is left (running or as a zombie) and no socket listens on the
    ports any more: each one binds and listens again (``SO_REUSEADDR`` lets the bind pass
    the closed connections in TIME_WAIT, never a listening socket)."""
    assert pids and ports
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()


@pytest.mark.slow
def test_two_processes_shard_the_state_checkpoint_and_resume():
    result, pids, ports = launch(
        "--processes", "2", "--steps", "4", "--dataset", "digits", "--batch-size", "32",
        "--timeout", "240",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["max_rel_dev"] <= 1e-5
    assert record["state_bytes_per_process"] <= 0.6 * record["state_bytes_single"]
    # Adam on the 64-512-256-10 MLP: mu and nu (float32) of every parameter, and the count
    elements = 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert record["state_bytes_single"] == 2 * 4 * elements + 4
    assert record["state_bytes_per_process"] == 2 * 4 * elements // 2 + 4  # all leaves split
    assert record["resumed_equal"] is True
    assert record["steps_per_s"] > 0
    # the fused CPU step is single-device: in a multi-process run it takes its XLA path,
    # which equals the optax transform's step bit for bit
    assert "devices" in record["fused_path"]
    assert record["fused_equal"] is True
    assert record["listening"] == ["127.0.0.1"]
    assert len(pids) == 5  # 1 reference + 2 + 2 resumed
    assert_cleaned_up(pids, ports)


def test_workers_that_overrun_the_timeout_are_killed_and_their_ports_freed():
    result, pids, ports = launch(
        "--processes", "2", "--steps", "4", "--dataset", "digits", "--batch-size", "32",
        "--timeout", "2",
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "still running after 2.0 s" in result.stderr
    assert len(pids) == 3  # the reference and the two sharded workers, started together
    assert_cleaned_up(pids, ports)


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("multiprocess_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--processes", "0", "--processes must be >= 1"),
        ("--steps", "1", "--steps must be >= 2"),
        ("--batch-size", "33", "--batch-size must be a positive multiple of the 2 devices"),
        ("--devices-per-process", "0", "--devices-per-process must be >= 1"),
        ("--optimizer", "torch.adamm", "unknown optimizer 'torch.adamm'"),
        ("--timeout", "0", "--timeout must be > 0"),
    ],
)
def test_bad_arguments_are_refused(example, capsys, flag, value, message):
    args = {"--processes": "2", "--steps": "4", "--batch-size": "32"} | {flag: value}
    with pytest.raises(SystemExit) as exit_:
        example.parse_args([x for kv in args.items() for x in kv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_every_torch_exact_optimizer_and_came_slice_their_state_on_a_4_device_mesh():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.zero_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "checked 15 optimizers, 0 failures" in result.stdout
