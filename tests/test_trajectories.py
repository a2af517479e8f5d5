"""Trajectory data (Lotka-Volterra, sktime's lynx and airline) and the trajectory regression
task."""

import csv

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from clitools import REPO

from pnode_zoo.data import ForecastDataModule, LotkaVolterraDataModule
from pnode_zoo.data.trajectories import lotka_volterra
from pnode_zoo.tasks import TrajectoryRegressor
from pnode_zoo.training.monitor import RunMonitor


def test_lotka_volterra_generator_follows_its_vector_field():
    data = LotkaVolterraDataModule(num_points=200, dt=0.01, noise=0.0)
    clean = data.clean
    central_difference = (clean[2:] - clean[:-2]) / (2 * data.dt)
    field = lotka_volterra(clean[1:-1], *data.params)
    assert np.abs(central_difference - field).max() < 1e-3 * np.abs(field).max()
    assert np.array_equal(data.series, clean)


def test_lotka_volterra_noise_is_seeded_and_scaled():
    first, second, other = (LotkaVolterraDataModule(noise=0.1, seed=s) for s in (3, 3, 4))
    assert np.array_equal(first.series, second.series)
    assert not np.array_equal(first.series, other.series)
    relative = (first.series - first.clean).std(axis=0) / first.clean.std(axis=0)
    assert np.allclose(relative, 0.1, rtol=0.15)


@pytest.mark.parametrize("make", [lambda: LotkaVolterraDataModule(),
                                  lambda: ForecastDataModule("lynx"),
                                  lambda: ForecastDataModule("airline", history=24,
                                                             horizon=12)])
def test_forecast_splits_are_ordered_in_time_without_overlap(make):
    data = make()
    data.setup("fit")
    ranges = data.ranges()
    for split in ("train", "val", "test"):
        origins = data.indices[split]
        targets = origins[:, None] + np.arange(1, data.horizon + 1)
        assert set(targets.ravel()) <= set(ranges[split]), split  # targets inside their range
        history, target = data.splits[split].tensors
        assert history.shape[1:] == data.input_shape
        assert target.shape[1:] == (data.horizon, data.input_shape[1])
    train_inputs = data.indices["train"][:, None] + np.arange(1 - data.history, 1)
    assert train_inputs.max() < ranges["val"].start  # training never sees a held-out value
    assert ranges["train"].stop == ranges["val"].start
    assert ranges["val"].stop == ranges["test"].start and ranges["test"].stop == len(data.series)


def test_windows_hold_the_standardised_series_and_its_times():
    data = LotkaVolterraDataModule(history=3, horizon=5)
    data.setup("fit")
    history, target = data.splits["test"][1]
    origin = data.indices["test"][1]
    standardised = (data.series - data.mean) / data.std
    assert np.allclose(history.numpy(), standardised[origin - 2: origin + 1], atol=1e-6)
    assert np.allclose(target.numpy(), standardised[origin + 1: origin + 6], atol=1e-6)
    assert data.times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    train = standardised[data.ranges()["train"]]
    assert np.allclose(train.mean(axis=0), 0, atol=1e-9) and np.allclose(train.std(axis=0), 1)


def test_lynx_is_log10_of_sktimes_series():
    from sktime.datasets import load_lynx

    data = ForecastDataModule("lynx")
    assert np.allclose(data.series[:, 0], np.log10(load_lynx().to_numpy()))
    assert data.input_shape == (10, 1) and len(data.times) == 15


def test_airline_is_log10_of_sktimes_monthly_passengers():
    from sktime.datasets import load_airline

    data = ForecastDataModule("airline", history=24, horizon=12)
    assert np.allclose(data.series[:, 0], np.log10(load_airline().to_numpy()))
    assert len(data.series) == 144 and data.input_shape == (24, 1) and len(data.times) == 13


def _persistence_mse(data: ForecastDataModule, split: str) -> float:
    """The forecast that repeats the last observation, scored on ``split``."""
    history, target = data.splits[split].tensors
    return float(((target - history[:, -1:]) ** 2).mean())


@pytest.mark.slow
def test_airline_end_to_end_through_the_command_line(cli_here, tmp_path):
    """The lynx model fitted to the airline series from the command line: a year ahead from
    the last two, tested on 1960, beats repeating the last month."""
    result = cli_here(["fit", "--config", str(REPO / "configs" / "lynx" / "node.yaml"),
                       "--data.init_args.name=airline", "--data.init_args.history=24",
                       "--data.init_args.horizon=12", "--trainer.max_epochs=15",
                       "--trainer.logger=CSVLogger", "--trainer.logger.save_dir=logs"])
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = tmp_path.glob("logs/**/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    (test_mse,) = [float(r["test/mse"]) for r in rows if r["test/mse"]]
    (nfe,) = [float(r["test/nfe"]) for r in rows if r["test/nfe"]]
    assert nfe == 12 * 2 * 4  # 12 months ahead, 2 RK4 steps each
    data = ForecastDataModule("airline", history=24, horizon=12)
    data.setup("test")
    assert test_mse < _persistence_mse(data, "test")  # 0.12 against 0.30 when written


@pytest.mark.parametrize("kwargs", [{"horizon": 0}, {"dt": 0.0}, {"horizon": 60}])
def test_bad_arguments_name_the_option(kwargs):
    with pytest.raises(ValueError, match="data"):
        ForecastDataModule("lynx", **kwargs)


def test_regressor_learns_lotka_volterra_and_plots_its_forecast(tmp_path):
    pl.seed_everything(0)
    data = LotkaVolterraDataModule(num_points=160, horizon=10, val_windows=1, test_windows=2)
    task = TrajectoryRegressor(input_shape=data.input_shape, times=data.times, lr=0.01,
                               arch_args={"hidden": 32})
    trainer = pl.Trainer(max_epochs=3, logger=False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[RunMonitor(plot_every_n_epochs=0)])
    trainer.fit(task, datamodule=data)
    assert trainer.checkpoint_callback.monitor == "val/mse"  # the task's own checkpointing
    first_val = trainer.callback_metrics["val/mse"].item()
    (result,) = trainer.test(task, datamodule=data, verbose=False)
    assert {"test/mse", "test/mae", "test/nfe"} <= set(result)
    assert result["test/nfe"] == 40  # 10 intervals x RK4
    assert first_val < 1.0  # below predicting the (standardised) mean
    assert (tmp_path / "plots" / "test_forecast.png").stat().st_size > 0
    assert not list(tmp_path.glob("plots/val_*"))  # plot_every_n_epochs=0: test pictures only


def test_irregular_lotka_volterra_keeps_its_invariant_at_its_own_times():
    data = LotkaVolterraDataModule(num_points=300, dt=0.6, gap_spread=0.6, noise=0.0)
    gaps = np.diff(data.observation_times)
    assert data.irregular and np.allclose(gaps, data.gaps)
    assert 0.24 <= gaps.min() < 0.3 and 0.9 < gaps.max() <= 0.96  # dt x [0.4, 1.6]
    alpha, beta, gamma, delta = data.params  # conserved: d x - g ln x + b y - a ln y
    prey, predator = data.clean[:, 0], data.clean[:, 1]
    invariant = delta * prey - gamma * np.log(prey) + beta * predator - alpha * np.log(predator)
    assert np.ptp(invariant) < 1e-7 * abs(invariant.mean())
    assert np.array_equal(LotkaVolterraDataModule(num_points=300).series,
                          LotkaVolterraDataModule(num_points=300, gap_spread=0.0).series)


def test_irregular_windows_carry_the_gaps_between_their_observations():
    data = LotkaVolterraDataModule(history=3, horizon=5, gap_spread=0.5)
    data.setup("fit")
    history, gaps, target = data.splits["test"][1]
    origin = data.indices["test"][1]
    times = data.observation_times[origin - 2: origin + 6]
    assert np.allclose(gaps.numpy(), np.diff(times), atol=1e-6)
    assert history.shape == (3, 2) and target.shape == (5, 2)


@pytest.mark.parametrize("spread", [-0.1, 1.0])
def test_gap_spread_out_of_range_names_the_option(spread):
    with pytest.raises(ValueError, match="data.gap_spread"):
        LotkaVolterraDataModule(gap_spread=spread)


def test_irregular_predictions_are_at_each_windows_own_times():
    data = LotkaVolterraDataModule(num_points=160, horizon=4, gap_spread=0.5)
    data.setup("fit")
    task = TrajectoryRegressor(input_shape=data.input_shape, times=data.times, irregular=True)
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        rows = task.prediction_rows([task.predict_step(batch, 0)], data)
    origins = data.indices["test"]
    for row in rows:
        origin = origins[row["sample"]]
        elapsed = data.observation_times[origin + row["step"]] - data.observation_times[origin]
        assert row["time"] == pytest.approx(elapsed, abs=1e-6)


def test_regular_model_on_irregular_data_names_the_link():
    data = LotkaVolterraDataModule(num_points=160, horizon=4, gap_spread=0.5)
    task = TrajectoryRegressor(input_shape=data.input_shape, times=data.times)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="irregular"):
        trainer.fit(task, datamodule=data)
