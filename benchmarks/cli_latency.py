"""How long a user waits for `diffplugin select`, `plan`, `edit` (built-in plugins) and the chat's planner, each
in a fresh process, and where that time goes.

    python benchmarks/cli_latency.py                            # this checkout, 5 runs of each, a table
    python benchmarks/cli_latency.py --tree /tmp/before         # also an older checkout, interleaved
    python benchmarks/cli_latency.py --repeats 7 --json

Each `--tree` (default: this checkout) runs with `PYTHONPATH=TREE` and its own empty `DIFFPLUGIN_HOME`, so only
the built-in plugins are installed and `edit` uses them. One untimed run of every command first fills the caches
a user's first call fills (the selector's example embeddings in the registry folder, the OS's file cache); its
time is reported as "first". Then the timed runs go round-robin over repeats, commands and trees, so that drift
on the machine hits them alike. Per command: the median wall time, CPU time and peak memory of the process, and
the median share of

* start+exit: the interpreter starting, until the CLI's first line runs, and shutting down after its last
  (PyTorch's modules take a while to tear down);
* import: importing modules (outermost imports, wherever they happen, by a wrapper around `__import__`);
* load: `OfflineSelector.load` (the encoder, its adapter, the support bank, the examples' embeddings), less
  the imports inside it;
* work: the rest (reading the photo, planning, the plugins, the judge, writing the result).

The chat figure is `benchmarks/chat_startup.py`'s `planner_ready_s` (from the script's first line to the
planner being usable; Textual's headless driver draws the screen meanwhile). Requests and photo are those of the
README; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "remove the rain, then brighten it"
PHOTO = "examples/photos/rocket-foggy-dusk.jpg"
EDIT_REQUEST = "it's a dark foggy night shot, clear the fog and make it brighter"
PHASES_ENV = "CLI_LATENCY_PHASES"

#: The child: runs `diffplugin ARGS` as the console script does, timing imports and the selector's load.
CHILD = r"""
import builtins, json, os, sys, time
started = time.perf_counter()
state = {"depth": 0, "import": 0.0, "load": 0.0, "load_imports": 0.0, "patched": False}
real_import = builtins.__import__

def timed_import(*args, **kwargs):
    if state["depth"]:
        return real_import(*args, **kwargs)
    state["depth"] += 1
    t = time.perf_counter()
    try:
        return real_import(*args, **kwargs)
    finally:
        state["depth"] -= 1
        state["import"] += time.perf_counter() - t
        if not state["patched"] and "assistant.selector.model" in sys.modules:
            patch(sys.modules["assistant.selector.model"].OfflineSelector)

def patch(cls):
    state["patched"] = True
    load = cls.load.__func__

    def timed_load(klass, *args, **kwargs):
        t, before = time.perf_counter(), state["import"]
        try:
            return load(klass, *args, **kwargs)
        finally:
            state["load"] += time.perf_counter() - t
            state["load_imports"] += state["import"] - before

    cls.load = classmethod(timed_load)

def report():
    total = time.perf_counter() - started
    load = state["load"] - state["load_imports"]
    with open(os.environ["CLI_LATENCY_PHASES"], "w") as f:
        json.dump({"in_process": total, "import": state["import"], "load": load,
                   "work": total - state["import"] - load}, f)

import atexit
atexit.register(report)
builtins.__import__ = timed_import
sys.argv = ["diffplugin", *sys.argv[1:]]
from assistant.cli import run
run()
"""


def commands(out: Path) -> dict[str, list[str]]:
    return {
        "select": ["select", REQUEST, "--json"],
        "plan": ["plan", REQUEST, "--json"],
        "edit": ["edit", str(ROOT / PHOTO), EDIT_REQUEST, "-o", str(out), "--json"],
    }


def run_cli(tree: Path, home: Path, args: list[str]) -> dict[str, float]:
    """One fresh process: wall, CPU and peak memory from the OS, the phases from the child."""
    phases = Path(tempfile.mkstemp(suffix=".json")[1])
    env = {**os.environ, "PYTHONPATH": str(tree), "DIFFPLUGIN_HOME": str(home), PHASES_ENV: str(phases),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("DIFFPLUGIN_REGISTRY", None)
    started = time.perf_counter()
    # In the tree's folder: `python -c` puts the working folder first on the path, before PYTHONPATH.
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=tree, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = child.stdout.read(), child.stderr.read()
    if child.returncode != 0:
        raise SystemExit(f"{shlex.join(args)} failed in {tree}:\n{stdout.decode()}\n{stderr.decode()}")
    inside = json.loads(phases.read_text())
    phases.unlink()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "start": wall - inside["in_process"], "import": inside["import"], "load": inside["load"],
            "work": inside["work"]}


def run_chat(tree: Path, home: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "DIFFPLUGIN_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "chat_startup.py"), str(ROOT / PHOTO)],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"chat_startup.py failed in {tree}:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(done.stdout[done.stdout.index("{"):])
    return {"wall": wall, "planner_ready": figures["planner_ready_s"], "first_frame": figures["first_frame_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="A checkout to time (repeatable; default: "
                                                                   "this one). Timed interleaved.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs of each command per tree.")
    parser.add_argument("--only", action="append", choices=["select", "plan", "edit", "chat"],
                        help="Only these commands (repeatable).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    wanted = args.only or ["select", "plan", "edit", "chat"]
    scratch = Path(tempfile.mkdtemp(prefix="cli-latency-"))
    homes = {tree: scratch / f"home-{n}" for n, tree in enumerate(trees)}
    runs: dict[tuple[str, Path], list[dict[str, float]]] = {}
    first: dict[tuple[str, Path], float] = {}
    counter = 0

    def once(name: str, tree: Path) -> dict[str, float]:
        nonlocal counter
        counter += 1
        if name == "chat":
            return run_chat(tree, homes[tree])
        return run_cli(tree, homes[tree], commands(scratch / f"out-{counter}.png")[name])

    load_before = os.getloadavg()[0]
    for name in wanted:  # fills the caches a user's first call fills
        for tree in trees:
            first[(name, tree)] = once(name, tree)["wall"]
    for _ in range(args.repeats):
        for name in wanted:
            for tree in trees:
                runs.setdefault((name, tree), []).append(once(name, tree))
    result = {"repeats": args.repeats, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
              "python": sys.version.split()[0], "cpus": os.cpu_count(), "figures": []}
    for name in wanted:
        for tree in trees:
            rows = runs[(name, tree)]
            medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            result["figures"].append({"command": name, "tree": str(tree), "first_s": first[(name, tree)],
                                      **{f"{k}_median": v for k, v in medians.items()},
                                      "wall_all": [r["wall"] for r in rows]})
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.repeats} runs each, interleaved; load average {load_before:.2f} before, "
          f"{result['load_average_after']:.2f} after; {os.cpu_count()} CPUs")
    print(f"{'command':<8} {'tree':<28} {'first':>6} {'wall':>6} {'cpu':>6} {'MiB':>6}   "
          f"{'st+ex':>6} {'import':>6} {'load':>6} {'work':>6}")
    for f in result["figures"]:
        tree = f["tree"][-28:]
        if f["command"] == "chat":
            print(f"{'chat':<8} {tree:<28} {f['first_s']:6.2f} {f['wall_median']:6.2f}   planner ready "
                  f"{f['planner_ready_median']:.2f} s, first frame {f['first_frame_median']:.2f} s")
            continue
        print(f"{f['command']:<8} {tree:<28} {f['first_s']:6.2f} {f['wall_median']:6.2f} {f['cpu_median']:6.2f} "
              f"{f['rss_mib_median']:6.0f}   {f['start_median']:6.2f} {f['import_median']:6.2f} "
              f"{f['load_median']:6.2f} {f['work_median']:6.2f}")


if __name__ == "__main__":
    main()
