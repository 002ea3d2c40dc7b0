"""Backbone initialisation, a declared part of every run.

- `scratch`: random weights.
- `imagenet`: timm's pretrained weights for the backbone, fetched by timm (Hugging Face hub or URL) into its
  cache on first use.
- `checkpoint:PATH`: a local timm/torch state dict of the backbone.
- `synthface`: the SynthFace build for the backbone and input size (`aunce_bench.synthface`), built on first use.

`resolve_init` runs when a run is planned: it fixes the init's identity (timm weight tag, file sha256 or
SynthFace configuration hash), which enters the run id. `load_backbone` runs when the run executes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from aunce_bench.errors import UserError
from aunce_bench.models.backbones import TokenBackbone, create_backbone
from aunce_bench.specs import Init

if TYPE_CHECKING:
    from aunce_bench.training.common import Progress

def resolve_init(text: str, backbone: str, crop_size: int, where: str = "invalid init") -> tuple[str, str | None]:
    """(init, identity) of a planned run: a checkpoint's path made absolute, and what pins the weights:
    `timm:<architecture>.<tag>`, `sha256:<file hash>` or `synthface:<configuration hash>` (None for scratch).
    `where` starts the message of a bad init: what set it (e.g. a method YAML's field)."""
    try:
        init = Init.parse(text)
    except ValueError as error:
        raise UserError(f"{where}: {error}")
    if init.kind == "scratch":
        return "scratch", None
    if init.kind == "imagenet":
        return "imagenet", f"timm:{_pretrained_cfg(backbone)['tag_name']}"
    if init.kind == "checkpoint":
        path = init.path.resolve()
        if not path.is_file():
            raise UserError(f"{where}: checkpoint file {path} does not exist; give the path of a state dict "
                            "(.pth, .pt, .bin or .safetensors)")
        _check_checkpoint_file(path, where)
        from aunce_bench.paths import file_sha256

        return f"checkpoint:{path}", f"sha256:{file_sha256(path)}"
    from aunce_bench.synthface import synthface_config

    return "synthface", f"synthface:{synthface_config(backbone, crop_size).content_hash()}"


_SAVE_ADVICE = "pass a file saved with torch.save(model.state_dict(), PATH), or a .safetensors file"


def _not_a_checkpoint(path: Path, why: str, where: str = "invalid init") -> UserError:
    return UserError(f"{where}: {path} is not a PyTorch checkpoint (state dict) file: {why}; {_SAVE_ADVICE}")


def _check_checkpoint_file(path: Path, where: str) -> None:
    """A UserError unless `path` starts as a torch.save file (a zip archive, or a pickle in the legacy format) or,
    named .safetensors, as a safetensors file (an 8-byte header length, then its JSON header)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if path.suffix == ".safetensors":
        if len(head) < 9 or head[8:9] != b"{":
            raise _not_a_checkpoint(path, "no safetensors header", where)
    elif not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise _not_a_checkpoint(path, "neither the zip archive nor the pickle that torch.save writes", where)


def _pretrained_cfg(backbone: str) -> dict:
    """timm's default pretrained weights of `backbone`: tag (`resnet18.a1_in1k`), hub id and URL; or a UserError."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(backbone):
        raise UserError(f"unknown backbone '{backbone}'; see timm.list_models()")
    cfg = get_pretrained_cfg(backbone)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"invalid init: timm has no pretrained weights for backbone '{backbone}'; use --init scratch "
                        "or --init checkpoint:PATH")
    return {"tag_name": f"{backbone}.{cfg.tag}" if cfg.tag else backbone, "hf_hub_id": cfg.hf_hub_id, "url": cfg.url}


def _weights_cache(backbone: str) -> str:
    """Where timm looks for the backbone's pretrained weights: the Hugging Face hub cache or torch's hub folder."""
    cfg = _pretrained_cfg(backbone)
    if cfg["hf_hub_id"]:
        from huggingface_hub import constants

        repo = cfg["hf_hub_id"].split("@")[0]
        return str(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}")
    return str(Path(torch.hub.get_dir()) / "checkpoints")


HUB_PROBE_TIMEOUT_S = 5.0


def _hub_unreachable(backbone: str) -> str | None:
    """Why the Hugging Face hub that holds the backbone's weights does not answer one quick request (None where it
    answers, the weights come from a URL, or the hub is set offline): timm would otherwise retry each file for
    about 20 s."""
    from huggingface_hub import constants, get_session

    if not _pretrained_cfg(backbone)["hf_hub_id"] or constants.HF_HUB_OFFLINE:
        return None
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # whatever the HTTP client raises: no route, no name, timeout, proxy
        return f"{constants.ENDPOINT} does not answer ({type(error).__name__}: {' '.join(str(error).split())})"
    return None


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Inside the block the hub is used offline (its cache only, no retries) where `offline`, as HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def load_backbone(name: str, init: Init, image_size: int, device: torch.device | None = None,
                  progress: "Progress | None" = None) -> tuple[TokenBackbone, dict]:
    """The backbone `name` initialised as `init`, and the init's provenance (kind, source, weights hash)."""
    parsed = init
    if parsed.kind == "scratch":
        return create_backbone(name, image_size=image_size), {"init": "scratch"}
    if parsed.kind == "imagenet":
        unreachable = _hub_unreachable(name)
        try:
            with _hub_offline(unreachable is not None):
                backbone = create_backbone(name, pretrained=True, image_size=image_size)
        except Exception as error:  # no network and no cached copy, or a hub error: one line with the ways out
            why = (f"{unreachable}, and no cached copy in {_weights_cache(name)}" if unreachable else
                   f"{type(error).__name__} (no network and no cached copy in {_weights_cache(name)}?)")
            raise UserError(f"cannot load ImageNet weights for backbone {name}: {why}; connect once so that timm can "
                            "download them, or pass --init checkpoint:PATH with a local state dict") from error
        return backbone, {"init": "imagenet", "source": _pretrained_cfg(name)["tag_name"],
                          "cache": _weights_cache(name)}
    if parsed.kind == "checkpoint":
        path = parsed.path
        source = {"init": "checkpoint", "source": str(path)}
    else:
        from aunce_bench.synthface import WEIGHTS_FILE, ensure_synthface, read_card, synthface_config

        folder, _ = ensure_synthface(synthface_config(name, image_size), device, progress)
        path = folder / WEIGHTS_FILE
        card = read_card(folder)
        source = {"init": "synthface", "source": card["name"], "objective": card["objective"],
                  "config_sha256": card["config_sha256"]}
    from aunce_bench.paths import file_sha256

    digest = file_sha256(path)
    if parsed.kind == "synthface" and digest != card["weights_sha256"]:
        raise UserError(f"{path}: weights do not match their model card (sha256 {digest[:12]}... vs "
                        f"{card['weights_sha256'][:12]}...); delete {path.parent} to rebuild")
    try:
        backbone = create_backbone(name, checkpoint_path=str(path), image_size=image_size)
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as error:
        if pickle.UnpicklingError in (type(error), type(error.__cause__)):  # torch.load(weights_only=True) refused
            raise _not_a_checkpoint(path, "it holds objects other than tensors (a whole model?)") from None
        raise UserError(f"cannot load backbone {name} from {path}: {str(error).splitlines()[0]}")
    return backbone, {**source, "weights_sha256": digest}
