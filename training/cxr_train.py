"""Train the chest X-ray triage model: ``tonle train cxr --config configs/cxr.yaml``.

One process, or several with ``torchrun --nproc_per_node 2 -m training.cxr_train
--config ...`` (DDP, gloo on CPU). ``tonle train cxr`` sets ``OMP_WAIT_POLICY=PASSIVE``
before torch loads (:mod:`training.openmp`); this module imports torch at once, so with
torchrun set it in the environment (``OMP_WAIT_POLICY=PASSIVE torchrun ...``). Steps:

1. read the labels CSV (or generate the synthetic set first when configured) and
   preprocess every image once with ``models.cxr_preprocess``;
2. pre-flight checks (:func:`training.cxr_gates.preflight`: version free, config and
   data valid, enough known positives), then the patient split: the labels file's
   ``split`` column as given, a patient-id hash with the configured fractions for rows
   it leaves empty;
3. train :class:`~models.cxr_net.CxrNet` (from scratch, or from a local weights file:
   :mod:`training.cxr_init`) with multi-label BCE over the known labels and MONAI
   augmentation, checkpointing ``state_dict``s every epoch (``--resume`` continues).
   Where the data set has finding masks and ``localisation.weight > 0``, a mask loss
   (:func:`mask_loss`) also pulls each positive label's activation map into its
   finding: supervised localisation, on the same maps the model serves. Each label's
   map is pulled into its own mask (:meth:`~training.cxr_data.CxrData.label_mask`:
   ``abnormal`` -> the union; a finding -> its own mask, else the union when it is
   the image's only finding);
4. on validation data: Platt calibration per label (a temperature and an offset,
   fitted with Platt's smoothed targets so that nearly separable validation data do
   not give saturated, overconfident probabilities), then per-label operating points
   (the highest threshold whose validation sensitivity reaches the target with the
   configured confidence);
5. fit the out-of-distribution gate (:mod:`models.cxr_ood`: training embeddings,
   threshold on validation and cross-fitted training distances) and export it inside
   the ONNX graph with the network;
   check parity on real validation images, evaluate the exported
   artifact on the test split, apply the held-out gates (a failing model is not
   saved), write the model card and save it in the registry.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from models.cxr_net import CXR_LABELS, Architecture, CxrNet
from models.registry import StoredModel
from training.cxr_gates import GatesConfig

if TYPE_CHECKING:
    from training.cxr_data import CxrData

__all__ = ["CxrTrainConfig", "main", "train_cxr", "with_init"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticData(_Section):
    """Generate the synthetic set (:mod:`training.cxr_synthetic`) when the labels CSV is missing."""

    n: int = Field(default=600, ge=20, description="Number of images.")
    seed: int = Field(default=7, description="Generator seed.")
    size: int = Field(default=256, ge=64, le=4096, description="Square image side in pixels.")


class DataConfig(_Section):
    labels_csv: Path = Field(description="labels.csv; image paths relative to its folder.")
    synthetic: SyntheticData | None = Field(
        default=None, description="Generate when labels_csv is absent."
    )
    split: tuple[float, float, float] = Field(
        default=(0.7, 0.15, 0.15),
        description="Patient fractions, for rows the labels file's split column leaves empty.",
    )
    split_seed: int = Field(default=0, description="Seed of the patient-id hash.")


class ModelConfig(_Section):
    arch: Architecture = "resnet-small"
    image_size: int = Field(default=224, ge=32, le=1024, description="Model input side, pixels.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class TrainConfig(_Section):
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=32, ge=1, description="Per process.")
    lr: float = Field(default=3e-3, gt=0, description="AdamW peak learning rate (cosine decay).")
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 42
    threads: int = Field(default=2, ge=1, description="Torch threads, all ranks.")


class AugmentConfig(_Section):
    prob: float = Field(default=0.8, ge=0, le=1, description="Per-transform probability.")
    rotate_deg: float = Field(default=7.0, ge=0, description="Max rotation, degrees.")
    scale: float = Field(default=0.1, ge=0, description="Max relative zoom in/out.")
    translate: float = Field(default=0.05, ge=0, description="Max shift, fraction of the side.")
    gamma: tuple[float, float] = Field(default=(0.8, 1.25), description="Contrast gamma range.")
    noise_std: float = Field(default=0.02, ge=0, description="Gaussian noise std.")


class LocalisationConfig(_Section):
    """Supervise the activation maps with finding masks where the data set has them."""

    weight: float = Field(
        default=0.0, ge=0, description="Weight of the mask loss next to the BCE; 0 = off."
    )


class InitConfig(_Section):
    """Pretrained weights to start from (``training.cxr_init``), and how to fine-tune."""

    weights: Path | None = Field(
        default=None, description="Local state dict file (--init-weights); None: from scratch."
    )
    origin: str = Field(
        default="", description="Where the file came from, for the card (--weights-origin)."
    )
    freeze_epochs: int = Field(
        default=0, ge=0, description="First epochs with the backbone frozen (head only)."
    )
    backbone_lr_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Backbone learning rate = train.lr x this; the head keeps train.lr.",
    )


class OodConfig(_Section):
    """The out-of-distribution gate (``models.cxr_ood``), fitted and exported with the model."""

    enabled: bool = Field(default=True, description="Fit and export the gate.")
    quantile: float = Field(
        default=0.999,
        gt=0.5,
        lt=1,
        description="Threshold: this quantile of the validation images' distances.",
    )
    folds: int = Field(
        default=5,
        ge=0,
        le=20,
        description="The training images' cross-fitted distances (this many folds) set "
        "the threshold too; 0 or 1: the validation images alone.",
    )


class OutputConfig(_Section):
    name: str = "cxr-triage"
    version: str = "0.1.0"
    checkpoint_dir: Path = Path(".tonle/checkpoints/cxr-triage")
    bootstrap_reps: int = Field(default=500, ge=0, description="AUROC bootstrap reps.")


class CxrTrainConfig(_Section):
    """The whole training configuration (``configs/cxr.yaml``)."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    localisation: LocalisationConfig = Field(default_factory=LocalisationConfig)
    sensitivity_targets: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(CXR_LABELS, 0.9),
        description="Label -> minimum sensitivity of its operating point.",
    )
    sensitivity_confidence: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: dict.fromkeys(CXR_LABELS, 0.8) | {"abnormal": 0.95},
        description=(
            "Label -> confidence: its threshold is the highest whose one-sided exact lower "
            "confidence bound of validation sensitivity reaches the target (a label left "
            "out: the point estimate)."
        ),
    )
    gates: GatesConfig = Field(default_factory=GatesConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    ood: OodConfig = Field(default_factory=OodConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Augmented(Dataset[Sample]):
    """Augmented ``(image, labels, masks)``; the masks move with the image."""

    def __init__(
        self,
        images: npt.NDArray[np.float32],
        labels: npt.NDArray[np.float32],
        masks: npt.NDArray[np.bool_],  # [N, C, S, S], or [N, C, 1, 1] when unused
        cfg: AugmentConfig,
    ) -> None:
        from monai.transforms.intensity.array import RandAdjustContrast, RandGaussianNoise
        from monai.transforms.spatial.array import RandAffine

        size = images.shape[-1]
        self.images = images
        self.labels = labels
        self.masks = masks
        self.affine = RandAffine(
            prob=cfg.prob,
            rotate_range=(math.radians(cfg.rotate_deg),),
            scale_range=(cfg.scale, cfg.scale),
            translate_range=(cfg.translate * size, cfg.translate * size),
            padding_mode="border",
        )
        self.contrast = RandAdjustContrast(prob=cfg.prob, gamma=cfg.gamma)
        self.noise = RandGaussianNoise(prob=cfg.prob, std=cfg.noise_std)

    def set_random_state(self, seed: int) -> None:
        """Seed every random transform."""
        for i, transform in enumerate((self.affine, self.contrast, self.noise)):
            transform.set_random_state(seed=seed + 1000 * i)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        moved = self.affine(torch.from_numpy(self.images[index]))
        mask = torch.from_numpy(self.masks[index].astype(np.float32))
        drawn = np.flatnonzero(self.masks[index].any(axis=(1, 2)))
        if drawn.size:  # the same geometric transform as the image, on drawn channels
            mask[drawn] = torch.as_tensor(
                self.affine(mask[drawn], mode="nearest", padding_mode="zeros", randomize=False)
            )
        image = self.noise(self.contrast(torch.as_tensor(moved)))
        return (
            torch.as_tensor(np.asarray(image), dtype=torch.float32),
            torch.from_numpy(self.labels[index]),
            torch.as_tensor(np.asarray(mask), dtype=torch.float32),
        )


def label_loss(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor
) -> torch.Tensor:
    """Class-weighted BCE over the KNOWN labels: NaN (an empty cell: the data set does
    not say, e.g. TB in NIH ChestX-ray14) is left out, never read as absent."""
    known = ~torch.isnan(labels)
    per_label = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(labels), pos_weight=pos_weight, reduction="none"
    )
    return (per_label * known).sum() / known.sum().clamp(min=1)


def mask_loss(cam: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean ``-log`` of the share of each supervised map's softmax mass inside its mask.

    Args:
        cam: ``[N, L, h, w]`` raw maps.
        labels: ``[N, L]`` 0/1 truth.
        masks: ``[N, L, S, S]`` each label's mask at the model input resolution
            (:func:`mask_inputs`; all 0 = not known).

    Returns:
        A scalar; 0 when no (image, label) pair in the batch is supervised.
    """
    n, k, h, w = cam.shape
    pairs = supervised_pairs(labels, masks)
    if not pairs.any():
        return cam.sum() * 0.0
    # Fraction of each map cell covered by the mask: the mass is pulled to the cells
    # most inside the finding, which is where the upsampled peak lands.
    cover = nn.functional.adaptive_avg_pool2d(masks, (h, w)).reshape(n, k, h * w)
    mass = (torch.softmax(cam.reshape(n, k, h * w), dim=-1) * cover).sum(-1)
    return -torch.log(mass[pairs] + 1e-6).mean()


def supervised_pairs(labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` bool: image positive for the label, and the label's mask is known.

    Args:
        labels: ``[N, L]`` truth (NaN = unknown: never positive).
        masks: ``[N, L, S, S]``; channel ``j`` is label ``j``'s own mask, all 0 where
            none is known (which mask that is, is decided once, by
            :meth:`training.cxr_data.CxrData.label_mask`).

    Raises:
        ValueError: ``masks`` has not one channel per label (e.g. a lone union mask).
    """
    if masks.shape[:2] != labels.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} for labels {tuple(labels.shape)}: "
            "need [N, L, S, S], one channel per label (training.cxr_train.mask_inputs)"
        )
    return (labels > 0) & (masks.flatten(2).amax(2) > 0)


def mask_inputs(data: CxrData, size: int) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Each label's mask resized like the images, and how many of each kind there are.

    Returns:
        ``[N, L, size, size]`` (channel ``j``: :data:`CXR_LABELS` ``[j]``'s mask from
        :meth:`~training.cxr_data.CxrData.label_mask` where that label is positive, else
        all False), and counts of positive (image, label) pairs by mask kind (``own``,
        ``sole finding``, ``union``) plus ``none`` for positive findings left
        unsupervised.
    """
    from models.cxr_preprocess import area_resize

    out = np.zeros((len(data.table), len(CXR_LABELS), size, size), dtype=bool)
    kinds = {"own": 0, "sole finding": 0, "union": 0, "none": 0}
    for i in range(len(data.table)):
        for j, label in enumerate(CXR_LABELS):
            if not data.labels[i, j] > 0:
                continue
            found = data.label_mask(i, label)
            if found is None:
                kinds["none"] += 1
                continue
            mask, kind = found
            out[i, j] = area_resize(mask.astype(np.float32), (size, size)) >= 0.5
            kinds[kind] += 1
    return out, kinds


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _ensure_data(cfg: DataConfig) -> Path:
    if cfg.labels_csv.exists():
        return cfg.labels_csv
    if cfg.synthetic is None:
        raise FileNotFoundError(f"{cfg.labels_csv} does not exist and no synthetic set is set")
    from training.cxr_synthetic import generate

    folder = cfg.labels_csv.parent
    generate(folder, cfg.synthetic.n, cfg.synthetic.seed, size=cfg.synthetic.size)
    if not cfg.labels_csv.exists():
        raise FileNotFoundError(f"the synthetic generator did not write {cfg.labels_csv}")
    return cfg.labels_csv


def _checkpoint_path(cfg: CxrTrainConfig) -> Path:
    return cfg.output.checkpoint_dir / "last.pt"


def _resume(
    ckpt: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.OneCycleLR,
    total_steps: int,
) -> int:
    """Load a checkpoint; returns the epoch to continue from (0 if it does not fit)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    current = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    saved_shapes = {k: tuple(v.shape) for k, v in state.get("model", {}).items()}
    if current != saved_shapes:
        logger.warning("checkpoint %s is for another network; starting afresh", ckpt)
        return 0
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    saved = state["scheduler"]
    if saved.get("total_steps") == total_steps:
        scheduler.load_state_dict(saved)
    else:  # more (or fewer) epochs than before: same position, stretched schedule
        scheduler.last_epoch = int(saved["last_epoch"])
        logger.info("schedule: %s -> %d steps", saved["total_steps"], total_steps)
    epoch = int(state["epoch"])
    logger.info("resumed from %s at epoch %d", ckpt, epoch)
    return epoch


def _set_seeds(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.default_rng(seed)


def train_cxr(
    cfg: CxrTrainConfig, *, resume: bool = False, progress: Progress | None = None
) -> StoredModel | None:
    """Train, calibrate, choose operating points, export and register the model.

    Args:
        cfg: the configuration.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        progress: callback for progress bars (rank 0 only).

    Returns:
        The stored artifact on rank 0, None on other ranks.
    """
    from training.cxr_data import load_cxr_data
    from training.cxr_gates import preflight

    rank, world = _rank_world()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("gloo")
    torch.set_num_threads(max(1, cfg.train.threads // world))
    _set_seeds(cfg.train.seed)
    report: Progress = progress if (progress is not None and rank == 0) else (lambda *_: None)

    labels_csv = _ensure_data(cfg.data) if rank == 0 else cfg.data.labels_csv
    if distributed:
        dist.barrier()  # rank 0 may have generated the data
    split = preflight(
        labels_csv,
        cfg.gates,
        name=cfg.output.name,
        version=cfg.output.version,
        fractions=cfg.data.split,
        seed=cfg.data.split_seed,
        sensitivity_labels=[*cfg.sensitivity_targets, *cfg.sensitivity_confidence],
    )
    train_idx, val_idx, test_idx = split.train, split.validation, split.test
    data = load_cxr_data(labels_csv, cfg.model.image_size, lambda d, t: report("preprocess", d, t))
    if len(data.table) != len(train_idx) + len(val_idx) + len(test_idx):
        raise ValueError(f"{labels_csv} changed while training started; run again")
    train = data.subset(train_idx)
    use_masks = cfg.localisation.weight > 0
    masks = np.zeros((len(train_idx), len(CXR_LABELS), 1, 1), dtype=bool)
    mask_kinds: dict[str, int] = {}
    if use_masks:
        masks, mask_kinds = mask_inputs(train, cfg.model.image_size)
        logger.info(
            "mask loss on %d training images with a mask; positive (image, label) pairs "
            "by mask: %s",
            int(masks.any((1, 2, 3)).sum()),
            mask_kinds,
        )
    train_set = _Augmented(train.images, train.labels, masks, cfg.augment)
    train_set.set_random_state(seed=cfg.train.seed + rank)
    sampler: DistributedSampler[Sample] | None = (
        DistributedSampler(train_set, num_replicas=world, rank=rank, seed=cfg.train.seed)
        if distributed
        else None
    )
    generator = torch.Generator().manual_seed(cfg.train.seed)
    loader = DataLoader(
        train_set,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_set) > cfg.train.batch_size * world,
    )

    net = CxrNet(cfg.model.arch, num_labels=len(CXR_LABELS), dropout=cfg.model.dropout)
    init_report = None
    if cfg.init.weights is not None:
        from training.cxr_init import load_init_weights

        init_report = load_init_weights(net, cfg.init.weights, cfg.init.origin)
        logger.info("init weights: %s", init_report.summary())
    model: nn.Module = nn.parallel.DistributedDataParallel(net) if distributed else net
    backbone = list(net.features.parameters())
    in_backbone = {id(p) for p in backbone}
    head = [p for p in net.parameters() if id(p) not in in_backbone]
    lrs = [cfg.train.lr * cfg.init.backbone_lr_scale, cfg.train.lr]
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": lrs[0]}, {"params": head, "lr": lrs[1]}],
        weight_decay=cfg.train.weight_decay,
    )
    total_steps = cfg.train.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lrs, total_steps=total_steps, pct_start=0.15
    )
    n_known = (~np.isnan(train.labels)).sum(axis=0)
    n_positive = (train.labels > 0).sum(axis=0)
    # A label unknown in every training image has no loss term: any weight will do.
    positives = np.where(n_known > 0, n_positive / np.maximum(n_known, 1), 0.5)
    positives = positives.astype(np.float32).clip(0.02, 0.98)
    pos_weight = torch.from_numpy((1 - positives) / positives)

    start_epoch = 0
    ckpt = _checkpoint_path(cfg)
    if resume and ckpt.exists():
        start_epoch = _resume(ckpt, net, optimizer, scheduler, total_steps)

    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        frozen = epoch < cfg.init.freeze_epochs
        if frozen:
            net.features.eval()  # batch-norm statistics stay those of the loaded weights
        if sampler is not None:
            sampler.set_epoch(epoch)
        running, count = 0.0, 0
        for step, (x, y, m) in enumerate(loader):
            logits, cam = model(x)
            loss = label_loss(logits, y, pos_weight)
            if use_masks:
                loss = loss + cfg.localisation.weight * mask_loss(cam, y, m)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if frozen:  # AdamW skips a parameter without a gradient (no decay either)
                for p in backbone:
                    p.grad = None
            optimizer.step()
            scheduler.step()
            running += loss.detach().item() * len(x)
            count += len(x)
            report(f"epoch {epoch + 1}/{cfg.train.epochs}", step + 1, len(loader))
        logger.info("epoch %d train loss %.4f", epoch + 1, running / max(count, 1))
        if rank == 0:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                },
                tmp,
            )
            tmp.replace(ckpt)  # atomic: a crash never leaves a half-written checkpoint

    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return None
    from training.cxr_package import package_model

    return package_model(
        cfg,
        net,
        data.subset(val_idx),
        data.subset(test_idx),
        n_train=len(train_idx),
        train_images=train.images,
        train_statistics=train.statistics,
        n_masks=int(masks.any(axis=(1, 2, 3)).sum()),
        mask_kinds=mask_kinds,
        report=report,
        split_source=split.source,
        init=init_report.model_dump() | cfg.init.model_dump(mode="json", exclude={"weights"})
        if init_report is not None
        else None,
    )


def with_init(cfg: CxrTrainConfig, weights: Path | None, origin: str | None) -> CxrTrainConfig:
    """``cfg`` with the command line's ``--init-weights`` / ``--weights-origin``."""
    update: dict[str, Any] = {}
    if weights is not None:
        update["weights"] = weights
    if origin is not None:
        update["origin"] = origin
    return cfg.model_copy(update={"init": cfg.init.model_copy(update=update)}) if update else cfg


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``torchrun ... -m training.cxr_train --config FILE [--resume]``."""
    import argparse

    from models.config import load_config

    parser = argparse.ArgumentParser(description="Train the chest X-ray triage model.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-weights", type=Path, default=None)
    parser.add_argument("--weights-origin", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = with_init(
        load_config(args.config, CxrTrainConfig), args.init_weights, args.weights_origin
    )
    stored = train_cxr(cfg, resume=args.resume)
    if stored is not None:
        print(f"saved {stored.metadata.tag} sha256={stored.metadata.sha256}")


if __name__ == "__main__":
    main()
