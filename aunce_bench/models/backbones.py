"""timm backbones that return a token sequence [B, T, C] whatever the model's feature layout."""

from __future__ import annotations

import difflib
import logging
from contextlib import contextmanager
from pathlib import Path

import timm
import timm.data
import torch
from torch import nn

from aunce_bench.errors import UserError

_TIMM_BUILDER_LOG = "timm.models._builder"


class TokenBackbone(nn.Module):
    """A headless timm model whose forward returns tokens [B, T, C] with C == ``num_features``.

    NCHW feature maps (CNNs) and NHWC maps (timm's Swin) are flattened over space;
    [B, N, C] sequences (ViT-like) pass through unchanged, class/register tokens included.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)
        self.channels_last = str(getattr(model, "output_fmt", "NCHW")) == "NHWC"
        # input normalisation of the weights' pretrained config (ImageNet's mean and std for timm's CNNs)
        self.data_config = timm.data.resolve_data_config({}, model=model)
        self.memory_format = torch.contiguous_format  # of the weights and the inputs (see use_channels_last)

    @property
    def convolutional(self) -> bool:
        """Whether the model computes with convolutions beyond a patch embedding (CNNs, not ViT or Swin)."""
        return sum(isinstance(m, nn.Conv2d) for m in self.model.modules()) > 1

    def use_channels_last(self) -> None:
        """Keep the weights and convert the inputs to the channels-last memory format (faster convolutions on
        tensor cores; the numbers stay those of the default format up to rounding)."""
        self.model.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.data_config["mean"]), tuple(self.data_config["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x.contiguous(memory_format=self.memory_format))
        if feats.ndim == 4:
            tokens = feats.flatten(1, 2) if self.channels_last else feats.flatten(2).transpose(1, 2)
        elif feats.ndim == 3:
            tokens = feats
        else:
            raise RuntimeError(f"unsupported feature shape {tuple(feats.shape)} from {type(self.model).__name__}")
        if tokens.shape[-1] != self.num_features:
            raise RuntimeError(
                f"token width {tokens.shape[-1]} != num_features {self.num_features}: "
                f"feature layout of {type(self.model).__name__} was misread"
            )
        return tokens


def check_backbone(name: str, where: str) -> None:
    """A UserError naming `where` (e.g. the method) unless timm knows the backbone `name`."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise UserError(f"{where}: field 'model.backbone': unknown timm backbone '{name}'{hint}; see timm.list_models()")


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    image_size: int | None = None,
) -> TokenBackbone:
    """Create a headless timm model ``name`` wrapped as a :class:`TokenBackbone`.

    ``checkpoint_path`` loads local weights through timm's pretrained loader (classifier dropped,
    Swin position tables adapted to ``image_size``); a checkpoint that leaves model weights
    unset raises ValueError. ``pretrained=True`` without a path downloads from timm's sources.
    ``image_size`` is passed as ``img_size`` to models that take it and ignored by the others.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown backbone {name!r}{hint}")
    kwargs: dict = dict(num_classes=0, global_pool="")
    if checkpoint_path is not None:
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"backbone checkpoint not found: {checkpoint_path}")
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint_path))
    with _missing_keys_guard(checkpoint_path):
        if image_size is None:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
        else:
            try:
                model = timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
            except TypeError as err:
                if "img_size" not in str(err):
                    raise
                model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return TokenBackbone(model)


@contextmanager
def _missing_keys_guard(checkpoint_path: str | None):
    """Raise if timm's loader reports missing keys (it loads non-strictly once the head is dropped)."""
    if checkpoint_path is None:
        yield
        return
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger(_TIMM_BUILDER_LOG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    missing = [r.getMessage() for r in records if r.getMessage().startswith("Missing keys")]
    if missing:
        raise ValueError(f"checkpoint {checkpoint_path} does not cover the model: {missing[0]}")


def input_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that the model's backbone expects its inputs normalised with."""
    for module in model.modules():
        if isinstance(module, TokenBackbone):
            return module.normalisation
    raise TypeError(f"{type(model).__name__} has no TokenBackbone")
