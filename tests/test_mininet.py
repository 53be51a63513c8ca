"""Mini-Net: the reconstruction's counts and equations, the alpha-weighted loss, early stopping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn

from lightseg import create_network
from lightseg.handlers import EarlyStopping, LossTermsLogger
from lightseg.losses import AlphaWeightedLoss, instance_alpha, soft_jaccard_per_sample
from lightseg.networks import MiniNet
from lightseg.networks.nets.mininet import DMResBlock


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _bn_channels(net: nn.Module) -> int:
    return sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))


# ---------------------------------------------------------------- counts
@pytest.mark.parametrize("name", ["mininet_paper_counts", "mininet_paper_counts_gray"])
def test_paper_counts_exact(name):
    net = create_network(name)
    assert _params(net) == 36_657  # the paper's trainable parameters
    assert _bn_channels(net) == 514
    running = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 1_028  # Keras's non-trainable moving mean + variance
    assert _params(net) + running == 37_685  # the paper's total


def test_literal_reading_count_and_its_difference():
    net = create_network("mininet")
    assert _params(net) == 38_193 and _bn_channels(net) == 514
    assert _params(net) - 36_657 == 1_536  # documented in the bundle README


def test_bn_layout_is_the_published_one():
    """514 = 8 (stem) + 6 x (8 + 16 + 32 + 16 + 8) (DMRes) + (16 + 8) (after the up-sampling) + 2 (head)."""
    net = create_network("mininet")
    assert _bn_channels(net.stem) == 8 and _bn_channels(net.x_out) == 2
    assert [_bn_channels(b) for b in (net.enc1, net.enc2, net.bottleneck, net.dec1, net.dec2)] == [48, 96, 192, 96, 48]
    assert _bn_channels(net.up1) + _bn_channels(net.up2) == 24
    assert net.x_out[0].out_channels == 2 and net.head.in_channels == 2


def test_arithmetic_of_the_literal_reading():
    """The per-block arithmetic the README states, recomputed from the formulas, not from the modules."""

    def sep(c, k):  # depthwise kxk without bias + pointwise with bias
        return c * k * k + c * c + c

    def dmres(c, decoder=False):
        eq2 = sep(c, 3) + sep(c, 5)
        eq3 = c * c + c
        shortcut = c * c + c
        last = (c * c * 9 + c) + (c * c * 25 + c) if decoder else sep(c, 3) + sep(c, 5)
        return eq2 + eq3 + shortcut + last + 6 * 2 * c  # six BN (gamma, beta)

    stem = 3 * 9 * 8 + 8 + 2 * 8
    down = (8 * 16 * 9 + 16) + (16 * 32 * 9 + 32)
    up = (32 * 16 * 9 + 16 + 2 * 16) + (16 * 8 * 9 + 8 + 2 * 8)
    head = (8 * 2 + 2 + 2 * 2) + (2 * 1 + 1)
    total = stem + dmres(8) + dmres(16) + dmres(32) + down + up + dmres(16, True) + dmres(8, True) + head
    assert total == _params(create_network("mininet")) == 38_193


# ---------------------------------------------------------------- shapes, channels, errors
@pytest.mark.parametrize("hw", [(4, 4), (12, 20), (68, 100), (256, 256)])
@pytest.mark.parametrize("name", ["mininet", "mininet_paper_counts"])
def test_any_multiple_of_four(name, hw):
    net = create_network(name).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, *hw)).shape == (2, 1, *hw)


@pytest.mark.parametrize("hw", [(30, 32), (32, 6), (5, 5)])
def test_not_divisible_by_four_is_refused_clearly(hw):
    with pytest.raises(ValueError, match=r"divisible by 4.*resize or pad"):
        create_network("mininet")(torch.randn(1, 3, *hw))


def test_channels_configurable():
    net = create_network("mininet", in_channels=1, out_channels=3).eval()
    assert net(torch.randn(1, 1, 16, 24)).shape == (1, 3, 16, 24)
    assert net.stem[0].in_channels == 1 and net.head.out_channels == 3


@pytest.mark.parametrize(
    "kwargs, error",
    [({"spatial_dims": 3}, "2D"), ({"conv": "dilated"}, "unknown convolution"), ({"down": "pool"}, "downsampling"),
     ({"out_channels": 0}, ">= 1"), ({"conv": "grouped", "group_width": 3}, "divisible")],
)  # fmt: skip
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        MiniNet(**kwargs)


# ---------------------------------------------------------------- the equations
def _randomize(net: nn.Module) -> None:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("decoder", [False, True])
def test_dmres_follows_equations(decoder):
    block = DMResBlock(8, decoder=decoder).eval()
    _randomize(block)
    x = torch.randn(2, 8, 12, 12)
    s1 = F.relu(block.branches1[0](x) + block.branches1[1](x))  # eq. 2 (7)
    s2 = F.relu(block.refine(s1) + s1)  # eq. 3 (8)
    expected = block.shortcut(x) + block.branches2[0](s2) + block.branches2[1](s2)  # eq. 4 (9 without the skip)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    kinds = {type(b[0]) for b in block.branches2}
    assert kinds == ({nn.ConvTranspose2d} if decoder else {nn.Sequential})  # f_d in eq. 9 only
    assert [b[0][0].kernel_size for b in block.branches1] == [(3, 3), (5, 5)]  # k = 2i + 1
    assert all(b[0][0].groups == 8 for b in block.branches1)  # depthwise-separable


def test_decoder_adds_the_encoder_skip():
    """eq. 9: the decoder output is S_out of the matching encoder DMRes plus the decoder DMRes."""
    net = create_network("mininet").eval()
    _randomize(net)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        s1 = net.enc1(net.stem(x))
        s2 = net.enc2(net.down1(s1))
        y = s2 + net.dec1(net.up1(net.bottleneck(net.down2(s2))))
        y = s1 + net.dec2(net.up2(y))
        torch.testing.assert_close(net(x), net.head(net.x_out(y)))
    assert s2.shape == (1, 16, 8, 8) and net.down2(s2).shape == (1, 32, 4, 4)


# ---------------------------------------------------------------- the alpha-weighted loss
def _hand_terms(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + BCE + Jaccard per sample, written out pixel by pixel."""
    p = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    inter = (p * y).sum(1)
    dice = 1 - (2 * inter + 1e-5) / (p.sum(1) + y.sum(1) + 1e-5)
    jacc = 1 - (inter + 1e-5) / (p.sum(1) + y.sum(1) - inter + 1e-5)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(1)
    return dice + bce + jacc


def test_alpha_weighted_loss_against_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 8, 8)
    target = (torch.rand(4, 1, 8, 8) > 0.6).float()
    per_sample = _hand_terms(logits, target)
    alpha = per_sample / per_sample.mean()
    loss = AlphaWeightedLoss()
    torch.testing.assert_close(loss(logits, target), (alpha * per_sample).mean())
    torch.testing.assert_close(loss.last_alpha.mean(), torch.tensor(1.0))
    plain = AlphaWeightedLoss(alpha="none")
    torch.testing.assert_close(plain(logits, target), per_sample.mean())
    assert set(plain.last_terms) == {"dice", "bce", "jaccard"}
    torch.testing.assert_close(AlphaWeightedLoss(gamma=0.0)(logits, target), per_sample.mean())


def test_alpha_weights_favour_the_harder_sample():
    target = torch.zeros(2, 1, 4, 4)
    target[:, :, 1:3, 1:3] = 1
    logits = torch.stack([target[0] * 8 - 4, -(target[1] * 8 - 4)])  # sample 0 right, sample 1 wrong
    logits.requires_grad_(True)
    loss = AlphaWeightedLoss()
    loss(logits, target).backward()
    assert loss.last_alpha[1] > 1.5 > 0.5 > loss.last_alpha[0]
    assert loss.last_alpha.requires_grad is False
    # the weights carry no gradient: d loss / d logits is alpha_b / B times the per-sample gradient
    g_weighted = logits.grad.clone()
    logits.grad = None
    AlphaWeightedLoss(alpha="none")(logits, target).backward()
    ratio = g_weighted[1].abs().sum() / logits.grad[1].abs().sum()
    torch.testing.assert_close(ratio, loss.last_alpha[1])


def test_soft_jaccard_and_instance_alpha_edge_cases():
    y = torch.ones(1, 1, 2, 2)
    torch.testing.assert_close(soft_jaccard_per_sample(y, y), torch.ones(1, 1))
    torch.testing.assert_close(instance_alpha(torch.zeros(3)), torch.ones(3))  # all perfect: uniform
    assert instance_alpha(torch.tensor([1.0, 3.0])).tolist() == [0.5, 1.5]


def test_alpha_loss_multichannel_and_bad_arguments():
    logits = torch.randn(2, 3, 4, 4)
    index = torch.randint(0, 3, (2, 1, 4, 4))
    assert AlphaWeightedLoss()(logits, index).dim() == 0
    for kwargs in ({"terms": ["dice", "focal"]}, {"terms": []}, {"alpha": "epoch"}, {"gamma": -1}):
        with pytest.raises(ValueError):
            AlphaWeightedLoss(**kwargs)


# ---------------------------------------------------------------- early stopping, loss-term logging
def _engines(scores, early):
    evaluator = Engine(lambda e, b: None)
    trainer = Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine):
        engine.state.metrics["val_iou"] = scores[trainer.state.epoch - 1]

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    early.evaluator = evaluator
    early.attach(trainer)
    return trainer


def test_early_stopping_counts_validations_without_improvement():
    scores = [0.5, 0.6, 0.6, 0.59, 0.58, 0.9, 0.9]
    trainer = _engines(scores, EarlyStopping(None, patience=3, metric_name="val_iou"))
    trainer.run([0], max_epochs=len(scores))
    assert trainer.state.epoch == 5  # best at 2, then three validations without improvement
    assert trainer.state.early_stopping_counter == 3 and trainer.state.early_stopping_best == 0.6
    # a stopper that is never triggered trains to the end
    trainer = _engines([0.1 * i for i in range(6)], EarlyStopping(None, patience=1, metric_name="val_iou"))
    trainer.run([0], max_epochs=6)
    assert trainer.state.epoch == 6


def test_early_stopping_does_not_judge_a_model_that_has_not_predicted_foreground_yet():
    """Mini-Net at the paper's learning rate on Kvasir-SEG (H200, 256x256) scored IoU 0 for its first validations:
    with patience 4 Ignite's rule stopped it at epoch 10 with a model that predicts nothing. From the first score
    above ``start_above`` on, patience counts as before (a later 0 counts)."""
    scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3, 0.3]
    trainer = _engines(scores, EarlyStopping(None, patience=2, metric_name="val_iou"))
    trainer.run([0], max_epochs=len(scores))
    assert trainer.state.epoch == 3  # Ignite's rule: best 0.0 at 1, two validations without improvement
    trainer = _engines(scores, EarlyStopping(None, patience=2, metric_name="val_iou", start_above=0.0))
    trainer.run([0], max_epochs=len(scores))
    assert trainer.state.epoch == 8 and trainer.state.early_stopping_best == 0.3  # counted from epoch 6
    trainer = _engines([0.3, 0.0, 0.0, 0.0], EarlyStopping(None, patience=2, metric_name="val_iou", start_above=0.0))
    trainer.run([0], max_epochs=4)
    assert trainer.state.epoch == 3


def test_early_stopping_state_survives_a_resume():
    scores = [0.5, 0.7, 0.6, 0.6, 0.6, 0.6]
    trainer = _engines(scores, EarlyStopping(None, patience=3, metric_name="val_iou"))
    trainer.run([0], max_epochs=3)  # best 0.7 at 2, one validation without improvement
    state = trainer.state_dict()
    assert state["early_stopping_counter"] == 1 and state["early_stopping_best"] == 0.7

    resumed = _engines(scores, EarlyStopping(None, patience=3, metric_name="val_iou"))
    resumed.load_state_dict(state)
    resumed.run([0], max_epochs=6)
    assert resumed.state.epoch == 5  # two more without improvement, not three


def test_early_stopping_disabled_and_bad_patience():
    trainer = _engines([0.5] * 5, EarlyStopping(None, patience=1, metric_name="val_iou", enabled="false"))
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 5 and "early_stopping_counter" not in trainer.state_dict()
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(None, patience=0)


def test_loss_terms_logger_epoch_means():
    loss = AlphaWeightedLoss()
    values = iter([{"dice": 0.2, "bce": 1.0}, {"dice": 0.4, "bce": 3.0}, {"dice": 1.0, "bce": 1.0}])
    trainer = Engine(lambda e, b: setattr(loss, "last_terms", next(values)))
    LossTermsLogger(loss).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    trainer.run([0, 1, 2], max_epochs=1)
    assert seen[0]["train_loss_dice"] == pytest.approx(1.6 / 3) and seen[0]["train_loss_bce"] == pytest.approx(5 / 3)
    with pytest.raises(TypeError, match="last_terms"):
        LossTermsLogger(nn.BCELoss())
    assert math.isfinite(seen[0]["train_loss_bce"])
