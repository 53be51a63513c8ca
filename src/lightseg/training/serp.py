"""Self-embedding Representation Parallel (SeRP), LiteNeXt paper section 3.3 and Algorithm 2.

The authors did not release this part; it is built from the paper:

- a target feature extractor with the architecture of the main one (the network's ``encoder``), initialized
  equal to it, never trained by backpropagation, updated after each optimizer step by an exponential moving
  average ``phi <- m phi + (1 - m) theta`` (:meth:`SeRP.update_target`, called by
  :class:`lightseg.handlers.EMAUpdate`);
- projector T: ``e_t = GAP(f_t) + GMP(f_t)`` of the target's deepest features (eq. 5);
- projector S: ``e_m = FC(GELU(FC(GAP(f_m) + GMP(f_m))))`` on the main branch (eqs. 6-7): the asymmetry that
  keeps the two branches from collapsing to a constant;
- ``L_SeRP = 1 - <e_m, e_t> / max(|e_m| |e_t|, eps)`` (eq. 9), averaged over the batch.

The main branch sees the strongly augmented view (the one the segmentation loss is computed on, with its mask
transformed alike); the target branch sees a weakly, geometrically augmented view of the same image. The two views
differ geometrically, but both embeddings are global pooled vectors, which do not depend on where in the image a
feature is: flips and rotations move features around without changing their global average or maximum (up to
border effects), so asking the two embeddings to agree is consistent, and no mask is needed for the target view.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import torch
from torch import nn

from lightseg.networks.blocks.litenext import pooled_embedding

__all__ = ["SeRP", "pooled_embedding", "serp_cosine_loss"]

logger = logging.getLogger(__name__)

# Top-level children of the wrapper: a state dict with any key under these is the wrapper's own.
_WRAPPER_PREFIXES = ("model.", "target_encoder.", "projector_s.")


def serp_cosine_loss(e_m: torch.Tensor, e_t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 9 averaged over the batch."""
    dot = (e_m * e_t).sum(dim=1)
    norms = (e_m.norm(dim=1) * e_t.norm(dim=1)).clamp_min(eps)
    return (1.0 - dot / norms).mean()


class SeRP(nn.Module):
    """Training wrapper: ``forward(x, weak=None)`` returns the network's logits on ``x`` and, in training mode
    with a weak view, also computes the SeRP loss, stored in ``last_serp_loss`` for
    :class:`lightseg.losses.LiteNeXtLoss`.

    Args:
        model: a network with an ``encoder`` (returning a list of features, deepest last, and an ``out_channels``
            attribute) and ``forward_features(x) -> (logits, deepest features)``, e.g.
            :class:`lightseg.networks.LiteNeXt`.
        momentum: EMA momentum m of the target extractor (0.99 by default: the target follows the main extractor
            with a lag of about 1 / (1 - m) = 100 steps).
        reduction: projector S hidden width = features / reduction (a squeeze-and-excitation MLP, 4 by default).
        eps: denominator floor of eq. 9.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.99, reduction: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        if not hasattr(model, "encoder") or not hasattr(model, "forward_features"):
            raise TypeError(f"{type(model).__name__} has no 'encoder' and 'forward_features': SeRP cannot wrap it.")
        self.model = model
        self.target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        dim = int(model.encoder.out_channels)
        hidden = max(dim // int(reduction), 1)
        self.projector_s = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.momentum = float(momentum)
        self.eps = eps
        self.last_serp_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, weak: torch.Tensor | None = None) -> torch.Tensor:
        logits, f_m = self.model.forward_features(x)
        if weak is not None and self.training:
            e_m = self.projector_s(pooled_embedding(f_m))
            with torch.no_grad():
                e_t = pooled_embedding(self.target_encoder(weak)[-1])
            self.last_serp_loss = serp_cosine_loss(e_m, e_t, self.eps)
        return logits

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load the wrapper's own state dict, or the BARE network's (what ``models/model.pt`` holds).

        A bare network state dict (no key under ``model.``, ``target_encoder.`` or ``projector_s.``) is loaded
        into :attr:`model` (``strict`` applies to it) and the EMA target is re-initialized from the loaded encoder,
        as at the start of training; projector S keeps its current weights. This is what a fine-tuning run
        loading ``model.pt`` into the training network needs (MONAI Label prepends a ``CheckpointLoader`` with
        ``strict=False`` that would otherwise match no key and load nothing). Returns what
        :meth:`torch.nn.Module.load_state_dict` returns, with the keys named as in the wrapper (``model.*``).
        """
        keys = list(state_dict)
        if not keys or any(k.startswith(_WRAPPER_PREFIXES) for k in keys):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = self.model.load_state_dict(state_dict, strict=strict, assign=assign)
        loaded = len(keys) - len(result.unexpected_keys)
        if loaded == 0:
            raise RuntimeError(
                f"none of the {len(keys)} keys of the state dict matches SeRP's network "
                f"({type(self.model).__name__}); unexpected keys start with {sorted(keys)[:3]}"
            )
        self.reset_target()
        logger.info(
            "SeRP: loaded a bare %s state dict into the main network (%d tensors; %d missing, %d unexpected); EMA "
            "target re-initialized from it",
            type(self.model).__name__,
            loaded,
            len(result.missing_keys),
            len(result.unexpected_keys),
        )
        return type(result)([f"model.{k}" for k in result.missing_keys], [f"model.{k}" for k in result.unexpected_keys])

    @torch.no_grad()
    def reset_target(self) -> None:
        """Target extractor := main extractor (parameters and buffers), as at the start of training."""
        self.target_encoder.load_state_dict(self.model.encoder.state_dict())

    @torch.no_grad()
    def update_target(self, momentum: float | None = None) -> None:
        """``target = m * target + (1 - m) * main`` for every parameter; buffers are copied."""
        m = self.momentum if momentum is None else float(momentum)
        for p_t, p_m in zip(self.target_encoder.parameters(), self.model.encoder.parameters(), strict=True):
            p_t.mul_(m).add_(p_m.detach(), alpha=1.0 - m)
        for b_t, b_m in zip(self.target_encoder.buffers(), self.model.encoder.buffers(), strict=True):
            b_t.copy_(b_m)
