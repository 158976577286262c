"""Checkpoint resume: a matching checkpoint continues, another network's is ignored."""

from __future__ import annotations

from pathlib import Path

import torch

from models.cxr_net import CxrNet
from training.cxr_train import _resume


def _parts(
    num_labels: int,
) -> tuple[CxrNet, torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    net = CxrNet("resnet-small", num_labels=num_labels)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10)
    return net, opt, sched


def test_resume_matching_and_foreign_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, opt, sched = _parts(5)
    ckpt = tmp_path / "last.pt"
    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
    }
    torch.save(state, ckpt)

    torch.manual_seed(1)
    fresh, opt2, sched2 = _parts(5)
    assert _resume(ckpt, fresh, opt2, sched2, total_steps=20) == 3
    torch.testing.assert_close(fresh.classifier.weight, net.classifier.weight)
    assert sched2.last_epoch == sched.last_epoch

    other, opt3, sched3 = _parts(3)  # another label set: shapes differ
    before = other.classifier.weight.detach().clone()
    assert _resume(ckpt, other, opt3, sched3, total_steps=10) == 0
    torch.testing.assert_close(other.classifier.weight, before)
