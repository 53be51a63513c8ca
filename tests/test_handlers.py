"""ModelSaver selection logic, on a tiny Ignite trainer/evaluator pair."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from lightseg.handlers import ModelSaver


def _engines(scores):
    net = torch.nn.Linear(1, 1)
    evaluator = Engine(lambda e, b: None)
    trainer = Engine(lambda e, b: net.weight.data.fill_(float(e.state.epoch)))

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine):
        engine.state.metrics["score"] = scores[trainer.state.epoch - 1]

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    return net, trainer, evaluator


@pytest.mark.parametrize("select, main, other", [("best", 2.0, 4.0), ("final", 4.0, 2.0)])
def test_model_saver_select(tmp_path, select, main, other):
    net, trainer, evaluator = _engines([0.1, 0.9, 0.5, 0.3])
    saver = ModelSaver(net, tmp_path, evaluator, metric_name="score", select=select)
    saver.attach(trainer)
    trainer.run([0], max_epochs=4)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item() == main
    other_file = "model_final.pt" if select == "best" else "model_best.pt"
    assert torch.load(tmp_path / other_file, weights_only=True)["weight"].item() == other
    assert trainer.state.best_model_epoch == 2 and "best_model_metric" in trainer.state_dict()


def test_model_saver_without_validation_saves_final(tmp_path):
    net = torch.nn.Linear(1, 1)
    trainer = Engine(lambda e, b: None)
    ModelSaver(net, tmp_path).attach(trainer)
    trainer.run([0], max_epochs=1)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model_final.pt").is_file()
    with pytest.raises(ValueError, match="select"):
        ModelSaver(net, tmp_path, select="median")
