"""CPU threads: an explicit count, then $DIFFPLUGIN_THREADS, then OMP_NUM_THREADS, then one fewer than the CPUs."""

from __future__ import annotations

import os

import pytest
import torch

from assistant import cpu_threads
from assistant.cpu_threads import THREADS_ENV, default_threads, use_cpu_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch: pytest.MonkeyPatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def test_the_default_is_one_thread_per_cpu_not_already_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, load, expected in ((1, 0.0, 1), (2, 0.7, 2), (2, 1.2, 1), (2, 5.0, 1), (16, 3.9, 13)):
        monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)), raising=False)
        monkeypatch.setattr(cpu_threads.os, "getloadavg", lambda load=load: (load, load, load), raising=False)
        assert default_threads() == expected, (cpus, load)


def test_an_explicit_count_then_the_environment_then_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert use_cpu_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert use_cpu_threads() == 2 and torch.get_num_threads() == 2
    assert use_cpu_threads(3) == 3 and torch.get_num_threads() == 3
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert use_cpu_threads() == default_threads() == torch.get_num_threads()


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_in_the_environment_is_named(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=rf"\${THREADS_ENV}='{value}': give a whole number of threads"):
        use_cpu_threads()


def test_the_executor_applies_its_thread_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.executor import DiffusionSettings, Executor

    Executor(DiffusionSettings(threads=2))
    assert torch.get_num_threads() == 2
    assert os.environ.get(THREADS_ENV) is None  # the setting is the process's, never written to the environment


def test_the_threads_option_reaches_every_executor_of_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from assistant.cli import app

    monkeypatch.setattr(os, "environ", dict(os.environ))  # the option writes the process's environment
    refused = CliRunner().invoke(app, ["--threads", "0", "plugins", "list"])
    assert refused.exit_code == 2 and "--threads" in refused.output
    done = CliRunner().invoke(app, ["--threads", "2", "plugins", "list", "--json"])
    assert done.exit_code == 0, done.output
    assert os.environ[THREADS_ENV] == "2" and use_cpu_threads() == 2
