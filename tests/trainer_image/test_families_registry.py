"""The family table: detection from model_index.json and single-file weight names, defaults, aliases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dreambooth_trainer.errors import BaseModelError
from dreambooth_trainer.families import (
    ALIASES,
    FAMILIES,
    ModelFamily,
    default_instance_type,
    family_defaults,
    family_of_base_model,
    get_family,
    min_image_side,
    resolve_alias,
)
from dreambooth_trainer.model_loading import BaseModelSource


@pytest.mark.parametrize("family", ["sdxl", "flux", "zimage"])
def test_a_diffusers_folder_is_recognised_by_its_pipeline_class(tiny_family_model, family: str) -> None:
    source = BaseModelSource("folder", str(tiny_family_model(family)))
    assert family_of_base_model(source) == family


def test_the_sd_folder_is_the_sd_family(tiny_model: Path) -> None:
    assert family_of_base_model(BaseModelSource("folder", str(tiny_model))) == "sd"


def test_an_unsupported_pipeline_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    with pytest.raises(BaseModelError, match="WanPipeline is not a supported family"):
        family_of_base_model(BaseModelSource("folder", str(tmp_path)))


@pytest.mark.parametrize(
    ("key", "family"),
    [
        ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "sdxl"),
        ("model.diffusion_model.input_blocks.0.0.weight", "sd"),
        ("double_blocks.0.img_attn.qkv.weight", "flux"),
        ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "flux"),
        ("context_refiner.0.attention.qkv.weight", "zimage"),
    ],
)
def test_a_single_file_is_recognised_by_its_weight_names(tmp_path: Path, key: str, family: str) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {key: torch.zeros(1)}
    if family == "sdxl":  # SDXL files also hold SD-style UNet keys: the SDXL marker must win over them
        tensors["model.diffusion_model.input_blocks.0.0.bias"] = torch.zeros(1)
    save_file(tensors, str(path))
    assert family_of_base_model(BaseModelSource("single_file", str(path))) == family


def test_a_single_file_of_no_known_family_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"blocks.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(BaseModelError, match="match no supported family"):
        family_of_base_model(BaseModelSource("single_file", str(path)))


def test_aliases_resolve_to_hub_ids_and_hub_ids_to_their_family() -> None:
    assert resolve_alias("sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert resolve_alias("FLUX1-dev") == "black-forest-labs/FLUX.1-dev"
    assert resolve_alias("sd15") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve_alias("z-image") == "Tongyi-MAI/Z-Image"
    assert resolve_alias("someone/own-model") == "someone/own-model"
    for alias in ALIASES.values():
        assert family_of_base_model(BaseModelSource("hub", alias.hub_id)) == alias.family


def test_licences_say_which_bases_allow_commercial_use() -> None:
    assert not ALIASES["flux1-dev"].commercial_use
    assert "Non-Commercial" in ALIASES["flux1-dev"].licence
    assert ALIASES["z-image"].licence == "Apache-2.0"


def test_defaults_per_family() -> None:
    assert min_image_side("sdxl") == min_image_side("flux") == min_image_side("zimage") == 512
    assert default_instance_type("sdxl") == "ml.g4dn.xlarge"
    assert default_instance_type("flux") == default_instance_type("zimage") == "ml.g6.xlarge"
    assert family_defaults("sdxl").resolution == 1024
    assert family_defaults("flux").mixed_precision == "bf16"
    with pytest.raises(BaseModelError, match="unknown model family 'sd3'"):
        family_defaults("sd3")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_in_the_table_implements_the_interface(name: str) -> None:
    family = get_family(name)
    assert isinstance(family, ModelFamily)
    assert family.name == name
    assert tuple(FAMILIES[name].pipeline_class_names) == family.pipeline_class_names
