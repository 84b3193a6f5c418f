"""Images for vision models: open and validate with Pillow, downscale, encode as an image content part.

>>> part = image_part("photo.jpg", max_side=768)  # doctest: +SKIP
>>> part["type"]  # doctest: +SKIP
'image_url'
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from ..errors import KecpmError

__all__ = ["MAX_PIXELS", "ImageError", "encode_image", "image_part"]

# Larger images (after a JPEG's reduced-scale decoding) are refused before decoding, a decompression
# bomb guard; downscaling handles the rest.
MAX_PIXELS = 80_000_000


class ImageError(KecpmError):
    """An image that cannot be sent: missing, unreadable, or absurdly large."""


def encode_image(path: str | Path, *, max_side: int = 1024, quality: int = 85) -> tuple[str, str]:
    """``(base64 data, mime type)`` of the image, downscaled so its longer side is at most ``max_side``.

    Any format Pillow reads is accepted and re-encoded: JPEG, or PNG when it has transparency.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            # A JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers max_side: huge photos are
            # downscaled while decoding instead of refused (other formats decode whole, hence the cap).
            image.draft("RGB", (max_side, max_side))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width}x{height} pixels is more than {MAX_PIXELS:,}")
            image.load()
            has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
            picture = image.convert("RGBA" if has_alpha else "RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    if has_alpha:
        picture.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        picture.save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    return base64.b64encode(buffer.getvalue()).decode("ascii"), mime


def image_part(path: str | Path, *, max_side: int = 1024) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part holding the image as a data URL."""
    data, mime = encode_image(path, max_side=max_side)
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
