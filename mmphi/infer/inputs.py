"""User inputs to the engine: messages with text, an image and/or audio, validated with clear errors."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmphi.errors import MmphiError

MAX_IMAGE_PIXELS = 40_000_000  # ~6300x6300; larger uploads are refused before decoding
MAX_IMAGE_BYTES = 25 * 1024 * 1024

ImageInput = str | Path | bytes | Image.Image
AudioInput = str | Path | bytes | np.ndarray  # an array is 16 kHz mono float32 samples


class InputError(MmphiError):
    """The request itself is wrong (empty message, not an image, too large, too long...)."""


class ImageError(InputError):
    pass


class PromptTooLong(InputError):
    pass


@dataclass
class Message:
    role: Literal["user", "assistant"]
    text: str = ""
    image: ImageInput | None = None
    audio: AudioInput | None = None


def load_image(src: ImageInput, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB PIL image from a path, bytes or PIL image; refuses non-images and absurd sizes early."""
    if isinstance(src, Image.Image):
        img = src
    else:
        try:
            if isinstance(src, bytes):
                if not src:
                    raise ImageError("the image is empty (0 bytes)")
                if len(src) > MAX_IMAGE_BYTES:
                    raise ImageError(f"the image is {len(src) / 2**20:.1f} MB; the limit is "
                                     f"{MAX_IMAGE_BYTES / 2**20:.0f} MB")
                img = Image.open(io.BytesIO(src))
            else:
                path = Path(src)
                if not path.is_file():
                    raise ImageError(f"image file not found: {path}")
                img = Image.open(path)
        except UnidentifiedImageError as err:
            raise ImageError("the file is not an image PIL can read (PNG, JPEG, WebP, GIF, BMP, ...)") from err
        except OSError as err:
            raise ImageError(f"cannot read the image: {err}") from err
    w, h = img.size  # from the header: nothing decoded yet
    if w * h > max_pixels:
        raise ImageError(f"the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
                         f"{max_pixels / 1e6:.0f} megapixels")
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"the image is damaged or truncated: {err}") from err
