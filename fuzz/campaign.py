"""`make fuzz`: every target of fuzz/targets.py under atheris (libFuzzer, coverage-guided),
two at a time on two cores, then the total. Any uncaught exception or broken invariant stops
that target with the input saved under out/fuzz/ and makes the campaign fail.

    python -m fuzz.campaign [--runs N] [--targets socks,config]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "out" / "fuzz"
DONE = re.compile(r"Done (\d+) runs in (\d+) second")
# A million in all. Under coverage instrumentation the session and line-reader targets run
# at ~1,500 inputs/s and the others at 6,000-10,000, so this split ends in about 3 minutes;
# the slow two go first, so that the two workers finish close together.
DEFAULT_RUNS = {"ftp-readers": 150_000, "ftp-session": 150_000, "config": 300_000,
                "socks": 400_000}


def fuzz_one(name: str, runs: int) -> None:
    """In a child process: libFuzzer exits the process when its runs are done."""
    import atheris

    with atheris.instrument_imports(include=["tunnel"]):
        from fuzz import targets
    corpus = OUT / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for n, seed in enumerate(targets.SEEDS.get(name, [])):
        (corpus / f"seed-{n}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-artifact_prefix={OUT}/{name}-",
                   "-max_len=1024", "-print_final_stats=1", str(corpus)],
                  targets.TARGETS[name])
    atheris.Fuzz()


def run_target(name: str, runs: int) -> tuple[str, int, float, int, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fuzz.campaign", "--child", name,
                           "--runs", str(runs)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    log = done.stdout + done.stderr
    (OUT / f"{name}.log").write_text(log)
    match = DONE.search(log)
    count = int(match.group(1)) if match else 0
    return name, count, time.monotonic() - started, done.returncode, log


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        # Before anything imports tunnel: atheris instruments modules as they are imported.
        fuzz_one(sys.argv[2], int(sys.argv[sys.argv.index("--runs") + 1]))
        return 0
    from fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=0,
                        help="inputs per target (default: a million in all, see DEFAULT_RUNS)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"no target {unknown}; there are {', '.join(TARGETS)}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        order = [*DEFAULT_RUNS, *TARGETS]
        plan = [(n, args.runs or DEFAULT_RUNS.get(n, 100_000))
                for n in sorted(names, key=order.index)]
        results = list(pool.map(lambda item: run_target(*item), plan))
    total, failed = 0, []
    print(f"{'target':<14}{'inputs':>12}{'seconds':>10}{'inputs/s':>10}  result")
    for (name, count, seconds, code, log), (_, wanted) in zip(results, plan, strict=True):
        total += count
        ok = code == 0 and count >= wanted
        if not ok:
            failed.append(name)
        print(f"{name:<14}{count:>12,}{seconds:>10.1f}{count / seconds:>10,.0f}  "
              + ("ok" if ok else f"FAILED (exit {code}); see {OUT}/{name}.log"))
        if not ok:
            print("\n".join(log.splitlines()[-25:]), file=sys.stderr)
    print(f"{'total':<14}{total:>12,}  inputs, {len(failed)} failing targets")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
