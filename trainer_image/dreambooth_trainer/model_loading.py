"""Find the base model (channel, local path or Hub id) and load its parts once for the whole run.

A single-file checkpoint (.safetensors/.ckpt) needs diffusers configs next to it; when a local diffusers
folder is at hand (in the `model` channel, or named by `base_model_config`) it is used and nothing is fetched
from the Hub.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import BaseModelError
from .hyperparameters import TrainingHyperparameters
from .sagemaker_contract import SageMakerPaths

log = logging.getLogger(__name__)

MODEL_CHANNEL = "model"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class BaseModelSource:
    kind: Literal["hub", "folder", "single_file"]
    location: str
    config: str | None = None  # diffusers folder or Hub id whose configs a single file is read with

    def describe(self) -> str:
        extra = f" (configs from {self.config})" if self.config else ""
        return f"{self.kind} {self.location}{extra}"


@dataclass
class ModelParts:
    """The base pipeline's modules, loaded once: training, class-image generation and export share them."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any  # DDPM with the base model's betas and prediction type, for training
    inference_scheduler: Any  # the base pipeline's own scheduler, for class images and the exported model
    source: BaseModelSource


def _find_diffusers_folder(root: Path) -> Path | None:
    """model_index.json at the root or up to two levels down (an unpacked repo folder)."""
    for depth_glob in ("model_index.json", "*/model_index.json", "*/*/model_index.json"):
        found = sorted(root.glob(depth_glob))
        if found:
            return found[0].parent
    return None


def _find_single_files(root: Path, exclude: Path | None) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            if exclude is not None and exclude in path.parents:
                continue  # component weights inside the diffusers folder
            files.append(path)
    return files


def _config_for(hp: TrainingHyperparameters, paths: SageMakerPaths, local_folder: Path | None) -> str | None:
    if hp.base_model_config:
        as_path = paths.resolve(hp.base_model_config)
        if not as_path.is_absolute():
            in_channel = paths.channel(MODEL_CHANNEL) / as_path
            as_path = in_channel if in_channel.exists() else as_path
        if as_path.exists():
            if not (as_path / "model_index.json").exists():
                raise BaseModelError(
                    f"base_model_config {as_path} is not a diffusers folder (no model_index.json)"
                )
            return str(as_path)
        return hp.base_model_config  # a Hub id: needs internet
    return str(local_folder) if local_folder else None


def _from_directory(root: Path, hp: TrainingHyperparameters, paths: SageMakerPaths) -> BaseModelSource | None:
    folder = _find_diffusers_folder(root)
    singles = _find_single_files(root, exclude=folder)
    if len(singles) > 1:
        names = ", ".join(str(path.relative_to(root)) for path in singles)
        raise BaseModelError(f"{root} holds several single-file checkpoints ({names}); keep exactly one")
    if singles:
        return BaseModelSource("single_file", str(singles[0]), _config_for(hp, paths, folder))
    if folder:
        return BaseModelSource("folder", str(folder))
    return None


def resolve_base_model(hp: TrainingHyperparameters, paths: SageMakerPaths) -> BaseModelSource:
    """Order: pretrained_model_name_or_path if it is a local path, then the `model` channel, then a Hub id."""
    local = paths.resolve(hp.pretrained_model_name_or_path)
    if local.is_file():
        if local.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise BaseModelError(f"base model file {local} must be .safetensors or .ckpt")
        return BaseModelSource("single_file", str(local), _config_for(hp, paths, None))
    if local.is_dir():
        source = _from_directory(local, hp, paths)
        if source is None:
            raise BaseModelError(f"{local} holds neither a diffusers folder nor a .safetensors/.ckpt file")
        return source
    channel = paths.channel(MODEL_CHANNEL)
    if channel.is_dir() and any(channel.iterdir()):
        source = _from_directory(channel, hp, paths)
        if source is None:
            raise BaseModelError(
                f"the '{MODEL_CHANNEL}' channel ({channel}) holds neither a diffusers folder "
                "(model_index.json) "
                "nor a .safetensors/.ckpt file"
            )
        return source
    if hp.pretrained_model_name_or_path.startswith(("/", "./", "../")):
        raise BaseModelError(f"base model path {hp.pretrained_model_name_or_path} does not exist")
    return BaseModelSource("hub", hp.pretrained_model_name_or_path)


def own_aligned_memory(module: Any) -> None:
    """Copy weights into fresh allocations.

    Loaders can leave tensors in memory-mapped files at odd alignments, which sends CPU kernels down other
    SIMD paths: the same weights from a folder and from a single file would then train differently in the
    last bits.
    """
    for tensor in (*module.parameters(), *module.buffers()):
        tensor.data = tensor.data.clone()


@contextlib.contextmanager
def loading_errors(source: BaseModelSource) -> Iterator[None]:
    """Whatever a library raises while loading becomes a BaseModelError naming the base model."""
    try:
        yield
    except BaseModelError:
        raise
    except Exception as exc:
        raise BaseModelError(
            f"cannot load base model {source.describe()}: {type(exc).__name__}: {exc}"
        ) from exc


def load_model_parts(source: BaseModelSource) -> ModelParts:
    """Load in fp32 on the CPU; the loop decides devices and dtypes."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    log.info("loading base model: %s", source.describe())
    with loading_errors(source):
        if source.kind == "single_file":
            local_config = source.config is not None and Path(source.config).is_dir()
            pipe = StableDiffusionPipeline.from_single_file(
                source.location,
                config=source.config,
                local_files_only=local_config,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            tokenizer, text_encoder, vae, unet = pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet
            inference_scheduler = pipe.scheduler
            del pipe
        else:
            where = source.location
            local = source.kind == "folder"
            kwargs = {"local_files_only": True} if local else {}
            tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(where, subfolder="text_encoder", **kwargs)
            vae = AutoencoderKL.from_pretrained(where, subfolder="vae", **kwargs)
            unet = UNet2DConditionModel.from_pretrained(where, subfolder="unet", **kwargs)
            scheduler_config = DDPMScheduler.load_config(where, subfolder="scheduler", **kwargs)
            scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", ""), DDPMScheduler)
            inference_scheduler = scheduler_class.from_config(scheduler_config)
    for module in (text_encoder, vae, unet):
        own_aligned_memory(module)
    noise_scheduler = DDPMScheduler.from_config(inference_scheduler.config)
    return ModelParts(tokenizer, text_encoder, vae, unet, noise_scheduler, inference_scheduler, source)


def assemble_pipeline(
    parts: ModelParts, *, unet: Any = None, text_encoder: Any = None, vae: Any = None
) -> Any:
    """A pipeline over modules already in memory (the trained ones where given): no reload, no safety
    checker (the service renders class images and samples of the user's own subject)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae if vae is not None else parts.vae,
        text_encoder=text_encoder if text_encoder is not None else parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=unet if unet is not None else parts.unet,
        scheduler=parts.inference_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
