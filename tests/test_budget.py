"""--time_budget: the TimeBudget handler on a fake clock, and real bundle runs on the tiny dataset."""

from __future__ import annotations

import itertools
import json
import logging
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler

from lightseg.handlers import (
    BudgetCosineLR,
    DeepTrainingSchedule,
    TimeBudget,
    budget_lr_scheduler,
    parse_time_budget,
    resolve_time_budget,
    slope_at,
)
from lightseg.handlers.budget import OFF
from lightseg.networks.blocks.vanilla import FusibleBlock

from .bundle_suite import _ok
from .conftest import BUNDLE_NAMES, BUNDLES, ROOT, _cli, bundle_config, run_bundle, tiny_overrides


class Clock:
    """A fake monotonic clock the fake training advances."""

    def __init__(self, start: float = 100.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


class Validator:
    """What TimeBudget needs of an evaluator: ``run(epoch)``; each validation costs ``cost`` seconds."""

    def __init__(self, clock: Clock, cost: float) -> None:
        self.clock, self.cost, self.epochs = clock, cost, []

    def run(self, epoch: int) -> None:
        self.clock.t += self.cost
        self.epochs.append(epoch)


def _trainer(clock: Clock, seconds_per_iteration: float = 1.0) -> Engine:
    def step(engine, batch):
        clock.t += seconds_per_iteration

    return Engine(step)


def _record(trainer: Engine, budget: TimeBudget) -> list[float]:
    """The schedule position each epoch runs at (read after the budget's own EPOCH_STARTED handler)."""
    positions: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: positions.append(budget.fraction()))
    return positions


# ---------------------------------------------------------------------------------------------------------------
# the handler on a fake clock


def test_stops_on_time_mid_epoch_and_validates_last():
    """final_epoch=False: the budget ends the training in the middle of an epoch, with one validation inside it."""
    clock = Clock()
    validator = Validator(clock, cost=0.5)
    budget = TimeBudget(minutes=1, validator=validator, clock=clock)  # 60 s, epochs of 10 x 1 s
    trainer = _trainer(clock)
    budget.attach(trainer)
    completed = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.epoch))
    trainer.run([0] * 10, max_epochs=10_000)
    assert completed and budget.stopped_by == "budget" and trainer.state.time_budget_stopped_by == "budget"
    # epochs of 10.5 s: the 6th starts at 52.5 s; after 7 iterations another one and the validation would not fit
    assert budget.elapsed() == pytest.approx(60.0)
    assert trainer.state.epoch == 6 and trainer.state.iteration == 57  # stopped mid-epoch
    assert validator.epochs == [1, 2, 3, 4, 5, 6]  # the final (partial) epoch was validated
    assert trainer.state.time_budget_elapsed_s == pytest.approx(budget.elapsed(), abs=1e-3)
    assert trainer.state.epochs_reached == 6


def test_fraction_is_the_epoch_fraction_for_equal_epochs_and_ends_at_exactly_one():
    clock = Clock()
    validator = Validator(clock, cost=0.5)
    budget = TimeBudget(minutes=1, validator=validator, final_epoch=True, clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    positions = _record(trainer, budget)
    trainer.run([0] * 5, max_epochs=10_000)
    # epochs of 5.5 s (5 iterations + validation): 10 fit whole in 60 s; the last starts at 49.5 s
    assert trainer.state.epoch == 10 and trainer.state.iteration == 50
    assert positions == pytest.approx([e / 9 for e in range(10)])
    assert positions[-1] == 1.0 and positions[-2] < 1.0
    assert all(b >= a for a, b in itertools.pairwise(positions))
    assert budget.elapsed() == pytest.approx(55.0) and budget.stopped_by == "budget"
    assert validator.epochs == list(range(1, 11))  # 0.5 s of 5.5 s: under the 10 % share, every epoch


def test_deep_training_slope_reaches_exactly_one_in_the_last_whole_epoch():
    clock = Clock()
    net = torch.nn.Sequential(FusibleBlock(4, 4, resample=None), FusibleBlock(4, 4, resample=None))
    budget = TimeBudget(minutes=0.5, final_epoch=True, clock=clock)
    trainer = _trainer(clock, seconds_per_iteration=1.3)
    budget.attach(trainer)  # listed before the slope handler, as in the bundles (the order does not matter)
    DeepTrainingSchedule(net, epochs=1000, budget=budget).attach(trainer)
    slopes, iterations = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: slopes.append(e.state.deep_training_slope))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: iterations.append(e.state.iteration))
    trainer.run([0] * 4, max_epochs=1000)
    assert slopes[0] == 0.0 and slopes[-1] == 1.0 and all(s < 1.0 for s in slopes[:-1])
    assert all(b >= a for a, b in itertools.pairwise(slopes))
    assert {float(m.slope) for m in net} == {1.0}
    assert all(i % 4 == 0 for i in iterations)  # every epoch ran whole
    assert budget.elapsed() <= 30.0
    for block in net:
        block.reparameterize()  # exact: slope 1


def test_budget_shorter_than_an_epoch_runs_one_more_whole_epoch_as_the_last(caplog):
    clock = Clock()
    net = FusibleBlock(2, 2, resample=None)
    budget = TimeBudget(minutes=0.05, final_epoch=True, clock=clock)  # 3 s; an epoch takes 5 s
    trainer = _trainer(clock)
    budget.attach(trainer)
    DeepTrainingSchedule(torch.nn.Sequential(net), budget=budget).attach(trainer)
    with caplog.at_level(logging.WARNING, logger="lightseg.handlers.budget"):
        trainer.run([0] * 5, max_epochs=100)
    assert trainer.state.epoch == 2 and trainer.state.iteration == 10
    assert float(net.slope) == 1.0 and "past the budget" in caplog.text


def test_epochs_cap_ends_the_schedule_too():
    clock = Clock()
    net = FusibleBlock(2, 2, resample=None)
    budget = TimeBudget(minutes=600, final_epoch=True, clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    DeepTrainingSchedule(torch.nn.Sequential(net), budget=budget).attach(trainer)
    positions = _record(trainer, budget)
    trainer.run([0] * 2, max_epochs=3)
    assert positions == [0.0, 0.5, 1.0] and float(net.slope) == 1.0 and budget.stopped_by == "epochs"


def test_validation_is_thinned_to_its_share_and_always_runs_at_the_end():
    clock = Clock()
    validator = Validator(clock, cost=3.0)  # 3 s validations after 5 s epochs: 37 % if run every epoch
    budget = TimeBudget(minutes=2, validator=validator, val_share=0.1, clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    trainer.run([0] * 5, max_epochs=1000)
    assert validator.epochs[0] == 1 and validator.epochs[-1] == trainer.state.epoch
    assert 2 < len(validator.epochs) < trainer.state.epoch
    assert len(validator.epochs) * 3.0 <= 0.1 * budget.elapsed() + 2 * 3.0
    assert budget.elapsed() <= 120.0


def test_val_interval_is_kept():
    clock = Clock()
    validator = Validator(clock, cost=0.1)
    budget = TimeBudget(minutes=1, validator=validator, val_interval=3, final_epoch=True, clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    trainer.run([0] * 5, max_epochs=1000)
    last = trainer.state.epoch
    assert last > 6 and validator.epochs == sorted(set(range(3, last + 1, 3)) | {last})


class Killed(Exception):
    pass


def test_state_dict_round_trip_and_resume_gets_what_is_left(tmp_path):
    clock = Clock()
    budget = TimeBudget(minutes=1, validator=Validator(clock, 0.5), clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    saved = tmp_path / "budget.pt"

    @trainer.on(Events.EPOCH_COMPLETED)
    def checkpoint_then_kill(engine):  # as ResumableCheckpoint (after the budget), then a kill in epoch 5
        torch.save(budget.state_dict(), saved)
        if engine.state.epoch == 4:
            clock.t += 2.0  # into epoch 5: this time is lost with the kill, as is the work
            raise Killed

    with pytest.raises(Killed):
        trainer.run([0] * 5, max_epochs=10_000)
    state = torch.load(saved, weights_only=True)  # plain values only
    assert state["elapsed"] == pytest.approx(22.0) and state["minutes"] == 1.0 and 0.0 < state["position"] < 1.0

    # a new process: another clock, the state loaded by a STARTED handler listed after the budget
    clock2 = Clock(start=5000.0)
    resumed = TimeBudget(minutes=1, validator=Validator(clock2, 0.5), clock=clock2)
    trainer2 = _trainer(clock2)
    resumed.attach(trainer2)
    trainer2.add_event_handler(Events.STARTED, lambda e: resumed.load_state_dict(state))
    positions = _record(trainer2, resumed)
    trainer2.run([0] * 5, max_epochs=10_000)
    assert clock2.t - 5000.0 <= 38.0  # only the 38 s that were left
    assert resumed.elapsed() == pytest.approx(clock2.t - 5000.0 + 22.0) and 59.0 <= resumed.elapsed() <= 60.0
    assert positions[0] >= state["position"] and positions[-1] == 1.0  # the schedule continues where it was


def test_resumed_with_the_budget_used_trains_nothing():
    clock = Clock()
    budget = TimeBudget(minutes=1, clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    trainer.add_event_handler(Events.STARTED, lambda e: budget.load_state_dict({"elapsed": 61.0}))
    done = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: done.append(True))
    trainer.run([0] * 5, max_epochs=10)
    assert done and trainer.state.epoch == 0 and trainer.state.iteration == 0 and budget.stopped_by == "budget"


def test_budget_given_on_resuming_a_run_without_one_starts_from_zero(tmp_path, caplog):
    from lightseg.handlers import ResumableCheckpoint

    clock = Clock()
    first = _trainer(clock)
    ResumableCheckpoint(tmp_path, {"time_budget": None}, resume=False).attach(first)  # as the bundle, no budget
    first.run([0] * 5, max_epochs=3)
    assert "time_budget" not in torch.load(tmp_path / "checkpoint.pt", weights_only=True)

    budget = TimeBudget(minutes=1, validator=Validator(clock, 0.5), clock=clock)
    trainer = _trainer(clock)
    budget.attach(trainer)
    ResumableCheckpoint(tmp_path, {"time_budget": budget}, resume=True).attach(trainer)
    start = clock.t
    with caplog.at_level(logging.INFO, logger="lightseg"):
        trainer.run([0] * 5, max_epochs=10_000)
    assert "written without a time budget: the 1 minutes start now" in caplog.text
    assert trainer.state.epoch > 3 and 55.0 <= clock.t - start <= 60.0 and budget.stopped_by == "budget"
    # another entry the checkpoint lacks is still an error
    with pytest.raises(KeyError, match="has no 'optimizer' entry"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        ResumableCheckpoint(tmp_path, {"optimizer": opt}, resume=True).load(_trainer(clock))


def test_cosine_learning_rate_follows_the_budget_and_ends_at_eta_min(tmp_path):
    clock = Clock()
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10_000, eta_min=1e-4)
    budget = TimeBudget(minutes=1, final_epoch=True, clock=clock)
    scheduler = budget_lr_scheduler(cosine, budget)
    assert isinstance(scheduler, BudgetCosineLR)

    def step(engine, batch):
        optimizer.step()
        clock.t += 1.0

    trainer = Engine(step)
    budget.attach(trainer)
    LrScheduleHandler(scheduler, print_lr=False).attach(trainer)  # as the bundles step it, at each epoch's end
    lrs, positions = [], []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: positions.append(budget.fraction()))
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    trainer.run([0] * 5, max_epochs=10_000)
    per_epoch = lrs[::5]
    assert per_epoch[0] == pytest.approx(0.1) and per_epoch[-1] == pytest.approx(1e-4)
    expected = [1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi * p)) / 2 for p in positions]
    assert per_epoch == pytest.approx(expected)
    assert lrs[-5:] == pytest.approx([1e-4] * 5)  # the whole last epoch at the final rate
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    assert "budget" not in torch.load(tmp_path / "s.pt", weights_only=True)


def test_constant_and_plateau_schedules_are_kept():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    budget = TimeBudget(minutes=1)
    constant = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert budget_lr_scheduler(constant, budget) is constant and budget_lr_scheduler(plateau, budget) is plateau
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    assert budget_lr_scheduler(cosine, TimeBudget(minutes=None)) is cosine  # no budget: the epoch recipe


@pytest.mark.parametrize("paper", ["constant", "plateau"])
def test_lr_schedule_cosine_replaces_the_papers_schedule(paper, tmp_path):
    def make():
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        if paper == "constant":
            return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")

    # without a budget: an epoch cosine over `epochs` to 1 % of the rate
    optimizer, scheduler = make()
    cosine = budget_lr_scheduler(scheduler, TimeBudget(minutes=None), schedule="cosine", epochs=4)
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.optimizer is optimizer
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    assert lrs == pytest.approx([1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    # with a budget: laid over the budget, ending at 1 %
    optimizer, scheduler = make()
    clock = Clock()
    budget = TimeBudget(minutes=1, clock=clock)
    laid = budget_lr_scheduler(scheduler, budget, schedule=" Cosine ", epochs=100_000)
    assert isinstance(laid, BudgetCosineLR) and laid.eta_min == pytest.approx(1e-4)

    def step(engine, batch):
        optimizer.step()
        clock.t += 1.0

    trainer = Engine(step)
    budget.attach(trainer)
    LrScheduleHandler(laid, print_lr=False).attach(trainer)
    last = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: last.append(optimizer.param_groups[0]["lr"]))
    trainer.run([0] * 5, max_epochs=100_000)
    assert last[0] == pytest.approx(0.01) and last[-1] == pytest.approx(1e-4)
    # "paper" keeps it; anything else is refused
    optimizer, scheduler = make()
    assert budget_lr_scheduler(scheduler, None, schedule="paper", epochs=4) is scheduler
    with pytest.raises(ValueError, match="--lr_schedule must be one of paper, cosine, got 'linear'"):
        budget_lr_scheduler(scheduler, None, schedule="linear")


def test_without_a_budget_nothing_changes():
    budget = TimeBudget(minutes=None)
    trainer = Engine(lambda e, b: None)
    before = {event: len(handlers) for event, handlers in trainer._event_handlers.items()}
    budget.attach(trainer)
    assert {event: len(handlers) for event, handlers in trainer._event_handlers.items()} == before
    assert not budget.enabled and budget.state_attributes == []
    net = FusibleBlock(2, 2, resample=None)
    DeepTrainingSchedule(torch.nn.Sequential(net), budget=budget).attach(trainer)
    slopes = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: slopes.append(e.state.deep_training_slope))
    trainer.run([0], max_epochs=3)
    assert slopes == [0.0, pytest.approx(1 - math.cos(math.pi / 4)), 1.0]  # the epoch schedule


def test_slope_at():
    assert slope_at(0.0) == 0.0 and slope_at(1.0) == 1.0 and slope_at(2.0) == 1.0
    assert slope_at(0.5, "linear") == 0.5
    assert 1.0 - math.cos(math.pi / 2) != 1.0  # why 1.0 is special-cased
    with pytest.raises(ValueError):
        slope_at(0.5, "step")


def test_parse_and_resolve(tmp_path):
    assert parse_time_budget(None) is None and parse_time_budget("15") == 15.0 and parse_time_budget(0.2) == 0.2
    for off in ("off", "false", False, 0, "0", "none"):
        assert parse_time_budget(off) is OFF
    for bad in ("abc", -1, "nan"):
        with pytest.raises(ValueError, match="time_budget"):
            parse_time_budget(bad)
    models = tmp_path / "models"
    models.mkdir()
    (models / "settings.json").write_text(json.dumps({"time_budget": 0.2}))
    assert resolve_time_budget(None, resume=True, ckpt_dir=models) == 0.2  # --resume true continues the budget
    assert resolve_time_budget("off", resume=True, ckpt_dir=models) is None
    assert resolve_time_budget(1, resume=True, ckpt_dir=models) == 1.0
    assert resolve_time_budget(None, resume=False, ckpt_dir=models) is None
    assert resolve_time_budget(None, resume=True, ckpt_dir=tmp_path / "none") is None


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_cli_accepts_and_documents_time_budget(bundle):
    from lightseg import cli

    train = str(BUNDLES / bundle / "configs" / "train.json")
    assert cli.check_override_keys(["time_budget"], [train]) == []
    text = cli.format_help([train])
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("--time_budget"))
    assert "minutes" in line and "null" in line


# ---------------------------------------------------------------------------------------------------------------
# real bundle runs on the tiny dataset

BUDGET_MIN = 0.2
BUDGET_S = 60 * BUDGET_MIN


def _settings(out: Path) -> dict:
    return json.loads((out / "models" / "settings.json").read_text())


def _history(client, run, key: str) -> list:
    return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)


def _mlflow(out: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'eval' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_bundle_run_stops_on_time_and_keeps_the_best_model(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist)
    log = _ok(run_bundle("cmunext_xxs", ("train.json",), time_budget=BUDGET_MIN, epochs=100_000, **overrides))
    settings = _settings(out)
    assert settings["status"] == "FINISHED" and settings["time_budget"] == BUDGET_MIN
    assert settings["time_budget_stopped_by"] == "budget"
    # on time: the budget ends training mid-epoch, keeping one validation's time (the machine is shared: margin)
    assert BUDGET_S - 6.0 <= settings["time_budget_elapsed_s"] <= BUDGET_S + 6.0, settings
    reached = settings["epochs_reached"]
    assert reached == settings["epochs_completed"] >= 1 and reached < 100_000
    assert (out / "models" / "model.pt").is_file() and settings["best_model_epoch"] >= 1  # the best checkpoint
    assert "time budget: " in log and "stopped by budget" in log
    ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert ckpt["time_budget"]["elapsed"] > 0 and ckpt["time_budget"]["minutes"] == BUDGET_MIN
    client, run = _mlflow(out, "cmunext_xxs")
    assert run.data.params["time_budget"] == str(BUDGET_MIN)
    history = _history(client, run, "epochs_reached")
    assert history and history[-1].value == reached
    elapsed = _history(client, run, "time_budget_elapsed_s")
    assert max(m.value for m in elapsed) <= BUDGET_S + 6.0


@pytest.mark.slow
def test_killed_budget_run_resumes_with_what_is_left(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    budget = 0.4
    base = tiny_overrides(out, data, datalist, batch_size=1, run_name="interrupted")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", bundle_config("cmunext_xxs", "train.json"),
           "--logging_file", str(BUNDLES / "cmunext_xxs" / "configs" / "logging.conf"), "--epochs", "100000",
           "--time_budget", str(budget)]  # fmt: skip
    for k, v in base.items():
        cmd += [f"--{k}", _cli(v)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "checkpoint.pt"
    deadline, used = time.time() + 300, 0.0
    while time.time() < deadline and used < 8.0 and proc.poll() is None:
        time.sleep(0.2)
        if ckpt.is_file():
            try:
                used = torch.load(ckpt, weights_only=True)["time_budget"]["elapsed"]
            except (RuntimeError, EOFError, KeyError):
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    used = torch.load(ckpt, weights_only=True)["time_budget"]["elapsed"]
    assert 8.0 <= used < 60 * budget - 4.0, used

    # --resume true alone continues the run's budget (from its settings.json) with the time already used
    start = time.monotonic()
    log = _ok(run_bundle("cmunext_xxs", ("train.json",), epochs=100_000, resume=True, **base))
    wall = time.monotonic() - start
    assert "continuing that budget" in log and f"{used:.1f} s of {60 * budget:.1f} s already used" in log
    settings = _settings(out)
    assert settings["time_budget"] == budget and settings["time_budget_stopped_by"] == "budget"
    assert 60 * budget - 6.0 <= settings["time_budget_elapsed_s"] <= 60 * budget + 6.0, settings
    assert wall < 60 * budget - used + 60.0  # startup included: far from a fresh budget's worth more
    _, run = _mlflow(out, "cmunext_xxs")
    assert run.info.run_name == "interrupted" and run.info.status == "FINISHED"


@pytest.mark.slow
def test_lvunet_budget_run_ends_at_slope_one(tiny_dataset, tmp_path):
    data, datalist = tiny_dataset
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, bundle="lvunet", image_size=[256, 256], pretrained="none")
    _ok(run_bundle("lvunet", ("train.json",), time_budget=0.5, epochs=100_000, **overrides))
    settings = _settings(out)
    assert settings["time_budget"] == 0.5 and settings["epochs_reached"] >= 2
    final = torch.load(out / "models" / "model.pt", weights_only=True)  # lvunet: the final-epoch model
    slopes = {float(v) for k, v in final.items() if k.endswith(".slope")}
    assert slopes == {1.0}
    client, run = _mlflow(out, "lvunet")
    history = _history(client, run, "deep_training_slope")
    assert history[-1].value == 1.0 and history[0].value == 0.0 and len(history) == settings["epochs_reached"]
    positions = _history(client, run, "time_budget_position")
    assert positions[-1].value == 1.0 and all(m.value < 1.0 for m in positions[:-1])
    # whole epochs: every epoch but the last one started within the budget (the time at the end of the epoch before
    # it is at most its start); the last one may end past it (the machine is shared: epochs vary)
    elapsed = [m.value for m in _history(client, run, "time_budget_elapsed_s")]
    assert len(elapsed) == settings["epochs_reached"] and (len(elapsed) < 3 or elapsed[-3] < 30.0), elapsed
