"""Does Ray reuse a pooled worker process that went idle for a few seconds (as decode tasks do between epochs)?

    python benchmarks/idle_workers.py

Starts a local Ray with 2 CPUs twice: with Ray's defaults, and with the launcher's
``LOCAL_RAY_SYSTEM_CONFIG``.  Each time, 6 tasks of 0.25 CPU run at once, then, after
6 s idle, 6 more; ``reused`` counts the second round's processes that ran the first
round (a process that is not reused is a new one, which imports torch again for
a decode task).  Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROUND = '''
import os, sys, time, json, ray
from raydet.engine.ray_connection import LOCAL_RAY_SYSTEM_CONFIG
ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
         _system_config=LOCAL_RAY_SYSTEM_CONFIG if sys.argv[1] == "raydet" else {})
@ray.remote(num_cpus=0.25)
def pid():
    time.sleep(1)
    return os.getpid()
first = set(ray.get([pid.remote() for _ in range(6)]))
time.sleep(6)
second = set(ray.get([pid.remote() for _ in range(6)]))
print(json.dumps({"processes": len(first), "reused": len(first & second)}))
'''


def one_round(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ROUND, setting], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_ADDRESS": ""})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results = {setting: one_round(setting) for setting in ("ray_default", "raydet")}
    print(json.dumps({"benchmark": "idle_workers", **results}))


if __name__ == "__main__":
    main()
