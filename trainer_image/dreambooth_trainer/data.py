"""Instance and class images: read whatever users upload, turn it into square RGB arrays.

PIL + numpy only. Phone photos carry EXIF rotation, PNGs come as RGBA/P/16-bit, scans as CMYK; anything that
does not decode is skipped with a line naming it, so one stray file never kills a job but an empty set does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import TrainingDataError
from .image_files import DECODE_ERRORS, decode_failure, decode_image

log = logging.getLogger(__name__)

CAPTION_SUFFIX = ".txt"
# Files that are never images and not worth a "skipping" line; job.json is the service's job spec, which
# lies in the upload folder the images channel is made from.
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "job.json"}


Fit = Callable[[Image.Image], np.ndarray]  # an RGB image -> (H, W, 3) uint8 training pixels


@dataclass(frozen=True)
class TrainingImage:
    path: Path
    pixels: np.ndarray  # (resolution, resolution, 3) uint8
    caption: str | None  # from <image>.txt or <stem>.txt next to it


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency goes onto white, 16-bit grey is scaled rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def square_crop(
    image: Image.Image, resolution: int, center_crop: bool, rng: np.random.Generator
) -> np.ndarray:
    """Resize the short side to `resolution`, then crop the square (centre or random)."""
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.BICUBIC)
    max_left, max_top = new_size[0] - resolution, new_size[1] - resolution
    if center_crop:
        left, top = max_left // 2, max_top // 2
    else:
        left, top = int(rng.integers(0, max_left + 1)), int(rng.integers(0, max_top + 1))
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8).copy()


def load_image(
    path: Path, resolution: int, center_crop: bool, rng: np.random.Generator, fit: Fit | None = None
) -> np.ndarray:
    image = decode_image(path)  # every pixel now: a truncated file fails here, not mid-training
    if fit is not None:  # e.g. aspect-ratio buckets instead of the square crop
        return fit(to_rgb(image))
    return square_crop(to_rgb(image), resolution, center_crop, rng)


def _caption_for(path: Path) -> str | None:
    for candidate in (path.with_name(path.name + CAPTION_SUFFIX), path.with_suffix(CAPTION_SUFFIX)):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8", errors="replace").strip()
            return text or None
    return None


def _candidate_files(folders: list[Path]) -> list[Path]:
    files = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name in _IGNORED_NAMES or path.name.startswith("."):
                continue
            if path.suffix.lower() in (CAPTION_SUFFIX, ".partial"):
                continue  # captions belong to their image; .partial is a class image still being written
            files.append(path)
    return files


def load_images(
    folders: list[Path], resolution: int, center_crop: bool, seed: int, fit: Fit | None = None
) -> tuple[list[TrainingImage], list[tuple[Path, str]]]:
    """Every decodable image under the folders (sorted, recursive), and (path, reason) per skipped file."""
    rng = np.random.default_rng(seed)
    images: list[TrainingImage] = []
    skipped: list[tuple[Path, str]] = []
    for path in _candidate_files(folders):
        try:
            pixels = load_image(path, resolution, center_crop, rng, fit)
        except DECODE_ERRORS as exc:
            reason = decode_failure(exc)
        else:
            images.append(TrainingImage(path, pixels, _caption_for(path)))
            continue
        skipped.append((path, reason))
        log.warning("skipping %s: %s", path, reason)
    return images, skipped


def require_images(
    images: list[TrainingImage], skipped: list[tuple[Path, str]], folders: list[Path], minimum: int, what: str
) -> None:
    """Fail with the reason a person can act on: nothing uploaded, or which files were unusable."""
    if len(images) >= minimum:
        return
    where = ", ".join(str(folder) for folder in folders)
    if not skipped:
        raise TrainingDataError(
            f"no {what} images found in {where}: "
            f"upload at least {minimum} JPEG/PNG/WebP file(s) to the channel"
        )
    names = "; ".join(f"{path.name}: {reason}" for path, reason in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    raise TrainingDataError(
        f"only {len(images)} usable {what} image(s) in {where}, need at least {minimum}; "
        f"{len(skipped)} file(s) could not be used ({names}{more})"
    )
