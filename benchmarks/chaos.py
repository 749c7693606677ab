"""Chaos, counted: the demo trained by 2 workers, one on each node of a loopback ``ray start`` cluster (a head and
a second node), first undisturbed, then with a seeded chaos loop (``tests/chaos.py``) killing one process the run
needs every 10-30 s — a training worker, a stream runner, a decode task's process, the MLflow recorder, or every
process of the second node (started again 5 s later) — ``--kills`` times.

Prints one JSON line: the kills (seconds after the start, target), kills survived (the run finished), iterations
redone (steps trained again after a restart, from the MLflow history), images seen against epochs × images, the
metrics of both runs, the MLflow run's status, what was left in the cluster, and the wall-time overhead (chaos
run / undisturbed run).

    python benchmarks/chaos.py [--kills 6] [--epochs 30] [--seed 0] [--targets training_worker,…,node]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["RAY_AUTH_MODE"] = "disabled"  # a cluster of this process's own, on loopback

from tests.chaos import TARGETS, ChaosLoop, leftovers, redone_iterations  # noqa: E402

NODE_SLOT = "chaos_node_slot"  # one per node: one worker on each


def report_stuck(ray, chaos, cluster, limit_s: float) -> None:
    """The chaos run did not end in ``limit_s``: print the kills and the cluster's placement groups (a group
    that waits for resources another holds), stop the cluster and end the process."""
    groups = [(group["state"], group["stats"]["scheduling_state"], list(group["bundles_to_node_id"].values()))
              for group in ray.util.placement_group_table().values() if group["state"] != "REMOVED"]
    print(json.dumps({"benchmark": "chaos", "stuck_after_s": limit_s, "placement_groups": groups,
                      "kills": [[kill.at_s, kill.target] for kill in chaos.kills]}), flush=True)
    cluster.stop()
    os._exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"the kinds to kill, of {','.join(TARGETS)}")
    parser.add_argument("--give-up-s", type=float, default=900,
                        help="the chaos run's limit: past it, print what the cluster holds and exit 1")
    args = parser.parse_args()

    import ray
    from mlflow.tracking import MlflowClient

    from raydet.config import load_config
    from raydet.data.shapes import generate_shapes
    from raydet.engine.launcher import launch
    from tests.demo_helpers import DEMO_CONFIG, quick_overrides
    from tests.helpers import with_repo_on_pythonpath
    from tests.ray_nodes import LocalCluster, wait_for_nodes

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "shapes"
        generate_shapes(data, seed=1, num_train=48, num_val=16)
        cluster = LocalCluster(num_cpus=4, env=with_repo_on_pythonpath(dict(os.environ)), resources={NODE_SLOT: 1})
        os.environ["RAY_ADDRESS"] = cluster.address
        try:
            cluster.add_node(num_cpus=2, resources={NODE_SLOT: 1})
            ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
            wait_for_nodes(ray, 2)
            overrides = [*quick_overrides(data, epochs=args.epochs), "checkpoint_config.interval=1",
                         "log_config.interval=1", "scaling.num_workers=2", "scaling.max_failures=20",
                         f"scaling.resources_per_worker={{CPU: 1, {NODE_SLOT}: 1}}", f"seed={args.seed}"]
            started = time.time()
            undisturbed = launch(load_config(DEMO_CONFIG, overrides), Path(folder) / "undisturbed").final_metrics
            undisturbed_s = time.time() - started

            chaos = ChaosLoop(cluster, {"num_cpus": 2, "resources": {NODE_SLOT: 1}}, seed=args.seed,
                              interval_s=(10, 30), max_kills=args.kills,
                              targets=tuple(args.targets.split(",")))
            started = time.time()
            chaos.start()
            watchdog = threading.Timer(args.give_up_s, report_stuck, (ray, chaos, cluster, args.give_up_s))
            watchdog.daemon = True
            watchdog.start()
            try:
                outcome = launch(load_config(DEMO_CONFIG, overrides), Path(folder) / "chaos")
            except Exception as error:  # what it died of, beside what was killed when
                kills = chaos.stop()
                print(json.dumps({"benchmark": "chaos", "run_error": str(error)[:2000],
                                  "kills": [[kill.at_s, kill.target] for kill in kills]}))
                raise
            finally:
                watchdog.cancel()
                kills = chaos.stop()
            chaos_s = time.time() - started
            final = outcome.final_metrics
            wait_for_nodes(ray, 2, timeout=120)
            time.sleep(10)  # the run's actors and placement groups go with it
            left = leftovers(ray)
            status = MlflowClient(outcome.mlflow_uri).get_run(outcome.mlflow_run_id).info.status
            redone = redone_iterations(outcome.mlflow_uri, outcome.mlflow_run_id)
            restarts = [line.split("resumed at ", 1)[1].strip() for line in
                        (Path(folder) / "chaos" / "train.log").read_text().splitlines() if "resumed at " in line]
        finally:
            ray.shutdown()
            cluster.stop()
    metrics = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75")
    print(json.dumps({
        "benchmark": "chaos", "seed": args.seed, "targets": args.targets,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "kills": [[kill.at_s, kill.target] for kill in kills], "kills_survived": len(kills),
        "loop_errors": chaos.errors, "iterations": final["iters"], "iterations_redone": redone,
        "restarts_from": restarts, "refits": final["refits"],
        "images_seen": final["images_seen"], "images_expected": args.epochs * 48,
        "metrics_chaos": {name: final.get(name) for name in metrics},
        "metrics_undisturbed": {name: undisturbed.get(name) for name in metrics},
        "replicas_identical": final["replicas_identical"], "mlflow_status": status, "left_in_cluster": left,
        "wall_s": {"undisturbed": round(undisturbed_s, 1), "chaos": round(chaos_s, 1)},
        "overhead": round(chaos_s / undisturbed_s, 2),
    }))


if __name__ == "__main__":
    main()
