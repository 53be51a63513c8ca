"""Tracking that cannot lose a run: a dead server fails fast; failed, killed and resumed runs are marked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ignite.engine import Engine, Events

from lightseg.tracking import TrackingError, check_tracking

from .conftest import make_tiny_dataset, run_bundle, tiny_overrides

DEAD = "http://127.0.0.1:9"


def test_dead_server_fails_fast_with_the_fix():
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as err:
        check_tracking(DEAD, True, timeout=2)
    assert time.perf_counter() - t0 < 10
    assert DEAD in str(err.value) and "--use_mlflow false" in str(err.value)


def test_no_check_without_mlflow(tmp_path):
    check_tracking(DEAD, "false")
    check_tracking(DEAD, False)


def test_local_store_folder_must_be_writable(tmp_path):
    check_tracking(f"sqlite:///{tmp_path}/new/sub/mlruns.db", True)  # a folder that will be created: fine
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrackingError, match=f"{tmp_path / 'afile'} is not a writable folder.*--use_mlflow false"):
        check_tracking(f"sqlite:///{tmp_path}/afile/mlruns.db", True)
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(TrackingError, match=str(ro)):
            check_tracking(f"sqlite:///{ro}/mlruns.db", True)
    finally:
        ro.chmod(0o700)


def test_mlflow_retries_are_shortened(monkeypatch):
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "5")  # a user's own setting is kept
    try:
        check_tracking(f"http://127.0.0.1:{server.server_port}", True)
    finally:
        server.shutdown()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "5"


# ---------------------------------------------------------------------------------------------------------------
# run status: an ignite engine with MONAI's MLFlowHandler on a SQLite store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlruns.db"


def _run(store: str, run_name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    matching = [r for r in runs if r.info.run_name == run_name]
    assert len(matching) == 1, [r.info.run_name for r in runs]
    return client.get_run(matching[0].info.run_id)


def _trainer(
    store: str, run_name: str, step, epochs: int = 3, stats_first: bool = True, start_epoch: int = 0, params=None
):
    from monai.handlers import MLFlowHandler, StatsHandler

    from lightseg.handlers import MLflowRunStatus

    engine = Engine(step)
    if stats_first:  # as in train.json: StatsHandler's EXCEPTION_RAISED handler re-raises and is attached first
        StatsHandler(iteration_log=False, name="stats").attach(engine)
    if start_epoch:

        @engine.on(Events.STARTED)
        def _resume(e):
            e.state.epoch, e.state.iteration = start_epoch, start_epoch * 4

    MLFlowHandler(
        tracking_uri=store,
        experiment_name="status",
        run_name=run_name,
        output_transform=lambda x: x,
        epoch_log=True,
        close_on_complete=True,
        experiment_param=params,
    ).attach(engine)
    MLflowRunStatus().attach(engine)
    return engine, epochs


def test_exception_marks_failed_and_reraises(store):
    def step(engine, batch):
        if engine.state.iteration == 6:
            raise ZeroDivisionError("boom in training")
        return 0.5

    engine, epochs = _trainer(store, "fails", step)
    with pytest.raises(ZeroDivisionError, match="boom in training"):
        engine.run([0, 1, 2, 3], max_epochs=epochs)
    run = _run(store, "fails")
    assert run.info.status == "FAILED"
    assert run.data.tags["lightseg.error"] == "ZeroDivisionError: boom in training"


def test_success_is_finished(store):
    engine, epochs = _trainer(store, "ok", lambda e, b: 0.25)
    engine.run([0, 1], max_epochs=epochs)
    run = _run(store, "ok")
    assert run.info.status == "FINISHED" and "lightseg.resumed" not in run.data.tags
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_resumed_run_is_running_again_and_tagged(store):
    from mlflow.tracking import MlflowClient

    def step(engine, batch):
        if engine.state.epoch == 2 and engine.state.iteration == 6:
            raise RuntimeError("crash")
        return 1.0

    engine, _ = _trainer(store, "resumed", step, params={"epochs": 4, "lr": 0.1})
    with pytest.raises(RuntimeError):
        engine.run([0, 1, 2, 3], max_epochs=4)
    assert _run(store, "resumed").info.status == "FAILED"

    seen = {}
    # resumed with a larger epoch budget: MLflow refuses to change a param, so the new value becomes a tag (what
    # train.json passes to MLFlowHandler as experiment_param)
    from lightseg.runs import resumable_params

    params = resumable_params({"epochs": 6, "lr": 0.1}, store, "status", "resumed", resume=True)
    engine, _ = _trainer(store, "resumed", lambda e, b: 1.0, start_epoch=1, params=params)

    @engine.on(Events.EPOCH_STARTED)
    def _status(e):
        seen.setdefault("status", _run(store, "resumed").info.status)

    engine.run([0, 1, 2, 3], max_epochs=4)
    run = _run(store, "resumed")  # the same run continued (one run of that name)
    assert seen["status"] == "RUNNING" and run.info.status == "FINISHED"
    assert run.data.tags["lightseg.resumed"] == "1" and run.data.tags["lightseg.resumed_at_epoch"] == "1"
    assert run.data.params["epochs"] == "4" and run.data.tags["lightseg.resumed.epochs"] == "6"
    assert "lightseg.resumed.lr" not in run.data.tags
    steps = {m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "Loss")}
    assert {5, 6} <= steps and 16 in steps  # the crashed run's iterations, then the resumed ones up to epoch 4


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from ignite.engine import Engine
    from monai.handlers import MLFlowHandler, StatsHandler
    from lightseg.handlers import MLflowRunStatus

    def kill():
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))

    def step(engine, batch):
        if engine.state.iteration == 3 and sys.argv[3] == "in_transaction":
            # as when the signal comes while MLflow logs a metric: its SQLite write lock is held
            from mlflow import MlflowClient
            from sqlalchemy import text

            store = MlflowClient(sys.argv[1])._tracking_client.store
            with store.ManagedSessionMaker(read_only=False) as session:
                session.execute(text("UPDATE experiments SET name = name"))
                kill()
        elif engine.state.iteration == 3:
            kill()
        return 0.1

    engine = Engine(step)
    StatsHandler(iteration_log=False).attach(engine)
    MLFlowHandler(tracking_uri=sys.argv[1], experiment_name="sig", run_name=sys.argv[2],
                  output_transform=lambda x: x).attach(engine)
    MLflowRunStatus().attach(engine)
    engine.run([0, 1, 2, 3], max_epochs=5)
    print("not reached")
    """
)


@pytest.mark.parametrize(
    ("sig", "when"), [("SIGTERM", "in_step"), ("SIGINT", "in_step"), ("SIGTERM", "in_transaction")]
)
def test_signal_marks_killed(tmp_path, sig, when):
    """Also while an MLflow write transaction is open: marking from inside the handler waited out SQLite's lock."""
    store = f"sqlite:///{tmp_path}/mlruns.db"
    script = tmp_path / "train.py"
    script.write_text(SIGNAL_SCRIPT)
    cmd = [sys.executable, str(script), store, sig, when]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "not reached" not in result.stdout
    if sig == "SIGTERM":
        assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    else:
        assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    run = _run(store, sig)
    assert run.info.status == "KILLED", result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# end to end through the bundle


@pytest.fixture
def small(tmp_path):
    data = tmp_path / "data"
    return data, make_tiny_dataset(data, n_train=2, n_val=1, n_test=1)


def test_bundle_dead_server_fails_within_30s(tmp_path, small):
    data, datalist = small
    t0 = time.perf_counter()
    result = run_bundle(
        "cmunext_xxs", ("train.json",), epochs=1, tracking_uri=DEAD, **tiny_overrides(tmp_path / "run", data, datalist)
    )
    elapsed = time.perf_counter() - t0
    assert result.returncode != 0 and elapsed < 30, elapsed
    assert f"MLflow tracking server {DEAD} is not reachable" in result.stderr and "--use_mlflow false" in result.stderr
    assert not (tmp_path / "run" / "models").exists()


@pytest.mark.slow
def test_bundle_exception_marks_failed(tmp_path, small):
    data, datalist = small
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, run_name="crash", lr_step_transform="$lambda engine: 1/0")
    result = run_bundle("cmunext_xxs", ("train.json",), epochs=2, **overrides)
    assert result.returncode != 0
    assert "lightseg: ZeroDivisionError: division by zero" in result.stderr, result.stderr[-3000:]
    run = _run(f"sqlite:///{out}/eval/mlruns.db", "crash")
    assert run.info.status == "FAILED" and "ZeroDivisionError" in run.data.tags["lightseg.error"]


@pytest.mark.slow
def test_bundle_sigterm_marks_killed_and_resume_continues(tmp_path, small):
    data, datalist = small
    out = tmp_path / "run"
    overrides = tiny_overrides(out, data, datalist, run_name="killed")
    cmd_result = {}

    import tests.conftest as conftest

    ckpt = out / "checkpoints" / "checkpoint.pt"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", conftest.bundle_config(
        "cmunext_xxs", "train.json"), "--epochs", "300"]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", conftest._cli(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=conftest.ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 240
        while not ckpt.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        cmd_result["rc"] = proc.wait(timeout=120)
    assert cmd_result["rc"] == 128 + signal.SIGTERM, (tmp_path / "log.txt").read_text()[-3000:]
    store = f"sqlite:///{out}/eval/mlruns.db"
    assert _run(store, "killed").info.status == "KILLED", (tmp_path / "log.txt").read_text()[-3000:]

    import torch

    # the epoch the kill reached depends on the machine's load: resume for two more
    state = torch.load(ckpt, weights_only=True)["trainer"]
    target = state["iteration"] // state["epoch_length"] + 2
    result = run_bundle("cmunext_xxs", ("train.json",), epochs=target, resume=True, **overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _run(store, "killed")
    assert run.info.status == "FINISHED" and run.data.tags["lightseg.resumed"] == "1"
    assert run.data.params["epochs"] == "300" and run.data.tags["lightseg.resumed.epochs"] == str(target)
    assert Path(out / "models" / "model.pt").is_file()
