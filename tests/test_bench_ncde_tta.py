"""benchmarks/ncde_time_to_accuracy.py's plumbing with the fits stubbed out: which fits run in
which order, the thread choice, the target and times to it, the files, and the resumption."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import ncde_time_to_accuracy as bench  # noqa: E402

#: per (run, seed): the test accuracy after each epoch, one epoch every `seconds`
FAKE = {
    ("a1", 0): (10.0, [0.2, 0.5]), ("a2", 0): (8.0, [0.3, 0.6]),  # 2 threads faster
    ("a2", 1): (8.0, [0.4, 0.5]),
    ("b", 0): (3.0, [0.5, 0.7]), ("b", 1): (4.0, [0.2, 0.3]),  # seed 1 never reaches 0.5
    ("c", 0): (2.0, [0.6, 0.6]), ("c", 1): (2.0, [0.1, 0.5]),
    ("r", 0): (1.0, [0.9, 0.95]),
}


def test_fits_order_target_files_and_resume(tmp_path, monkeypatch):
    calls = []

    def fake_fit(config, args, threads, curve, workdir):
        run, seed = curve.parent.name.split("-")[1:]
        seed = int(seed)
        calls.append((config, run, seed, threads, tuple(args)))
        seconds, accuracies = FAKE[run, seed]
        # (b) counted K and the cache's hits; (c)'s rows are as fits recorded before that
        counted = {"b": lambda e: {"forward_iters_median": 2 + e * seed,
                                   "forward_iters_max": 3 + e, "cache_hit_rate": 0.5 * e}}
        extra = counted.get(run, lambda e: {})
        return [{"epoch": e, "train_seconds": seconds * (e + 1), "metric_name": "test/acc",
                 "metric": acc, **extra(e)} for e, acc in enumerate(accuracies)]

    monkeypatch.setattr(bench, "fit_curve", fake_fit)
    monkeypatch.setattr(bench, "OUT_DIR", tmp_path)
    monkeypatch.setattr(_common, "OUT_DIR", tmp_path)
    argv = ["ncde_time_to_accuracy.py", "--tasks", "osuleaf", "--reps", "2", "--epochs", "2",
            "--workdir", str(tmp_path / "work"), "--allow-dirty"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    # seed 0 runs both thread counts and the ResNet; seed 1 only the faster plain (2 threads)
    assert [(run, seed) for _, run, seed, _, _ in calls] == [
        ("a1", 0), ("a2", 0), ("b", 0), ("c", 0), ("r", 0), ("a2", 1), ("b", 1), ("c", 1)]
    by_run = {(run, seed): (config, threads, args) for config, run, seed, threads, args in calls}
    assert by_run["c", 1][0] == "configs/osuleaf/ncde_parareal.yaml" and by_run["c", 1][1] == 1
    assert "--trainer.strategy=time_parallel" in by_run["c", 1][2]
    assert "--trainer.max_epochs=2" in by_run["b", 0][2]
    assert not any("max_epochs" in arg for arg in by_run["r", 0][2])  # the ResNet's own epochs
    (task,) = json.loads((tmp_path / "ncde_time_to_accuracy.json").read_text())["tasks"]
    assert task["a_threads"] == 2
    assert task["target"] == 0.5  # (a)'s worse final accuracy
    runs = task["runs"]
    assert runs["a"]["times_to_target"] == [16.0, 16.0]
    assert runs["b"]["times_to_target"] == [3.0, float("inf")]  # reached at epoch 0
    assert runs["c"]["times_to_target"] == [2.0, 4.0]
    assert runs["c"]["speedup"] == {"median": 6.0, "min": 4.0, "max": 8.0}
    assert task["resnet_final_metrics"] == [0.95] and task["resnet_epochs"] == 2
    # K: epoch medians 2, 2 (seed 0) and 2, 3 (seed 1): their medians 2 and 2.5, median 2.25
    assert runs["b"]["forward_iters_median"] == 2.25 and runs["b"]["forward_iters_max"] == 4
    assert runs["b"]["cache_hit_rate"] == 0.25
    assert "forward_iters_median" not in runs["c"]
    text = (tmp_path / "ncde_time_to_accuracy.md").read_text()
    assert "| osuleaf | 2 | 0.500 | 16 s, 0.550 | 2 | " in text
    assert "| 2.25 (4), 0.25; – |" in text
    assert "Wang et al. 2017" in text and "Command: `python" in text
    assert (tmp_path / "ncde_time_to_accuracy.png").stat().st_size > 0
    # a rerun reads every fit back from the work folder and trains nothing
    calls.clear()
    bench.main()
    assert calls == []


def test_learning_curve_reads_labels_not_the_index_of_an_indexed_batch():
    from types import SimpleNamespace

    import torch
    from learning_curve import LearningCurve

    from pnode_zoo.tasks import Classifier

    torch.manual_seed(0)
    args = {"hidden": 4, "width": 8, "parareal": {"num_slices": 4, "tol": 1e-9}}
    twin = Classifier("ncde_parareal", {**args, "parareal": {**args["parareal"],
                                                             "warm_start": True}},
                      num_classes=3, input_shape=(1, 9))
    plain = Classifier("ncde", {"hidden": 4, "width": 8}, num_classes=3, input_shape=(1, 9))
    plain.load_state_dict(twin.state_dict())
    x, index = torch.randn(12, 1, 9), torch.arange(100, 112)
    with torch.no_grad():
        predicted = plain(x).argmax(dim=-1)  # the plain CDE's predictions, independently
    labels = predicted.clone()
    labels[:3] = (labels[:3] + 1) % 3  # 9 of 12 right
    batches = [(x[:6], labels[:6], index[:6]), (x[6:], labels[6:], index[6:])]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(test_dataloader=lambda: batches))
    assert LearningCurve.evaluate(trainer, twin) == ("test/acc", 0.75)


def test_learning_curve_reads_the_epochs_iterations_from_the_run_monitor():
    from types import SimpleNamespace

    from learning_curve import LearningCurve

    from pnode_zoo.training import RunMonitor

    monitor = RunMonitor()
    assert LearningCurve.parareal(SimpleNamespace(callbacks=[monitor])) == {}  # no calls yet
    monitor._iterations = [1, 3, 2, 2]
    monitor._sums.update(cache_hits=6.0, cache_lookups=8.0)
    assert LearningCurve.parareal(SimpleNamespace(callbacks=[object(), monitor])) == {
        "forward_iters_median": 2, "forward_iters_max": 3, "cache_hit_rate": 0.75}
    monitor._sums.update(cache_hits=0.0, cache_lookups=0.0)  # no cache: no hit rate
    assert "cache_hit_rate" not in LearningCurve.parareal(SimpleNamespace(callbacks=[monitor]))
    assert LearningCurve.parareal(SimpleNamespace(callbacks=[])) == {}
