"""PNG, BMP and JPEG plane sources, read whole with Pillow.

Such files are small by nature, so they are decoded once at open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import CorruptFileError, UnsupportedFormatError
from tilex.readers.base import _reason, _SourceBase

__all__ = ["ImageSource"]


class ImageSource(_SourceBase):
    """A PNG, BMP or JPEG file, read whole at open (such files are small).

    16-bit grayscale PNG stays uint16; palette and CMYK images become RGB.

    Examples
    --------
    >>> ImageSource("visible.png").read(0, 8, 0, 8).shape  # doctest: +SKIP
    (3, 8, 8)
    """

    def __init__(self, path: str | os.PathLike[str], format: str) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path)
        self.format = format
        try:
            with Image.open(self.path) as image:
                if image.mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                elif image.mode == "1":
                    image = image.convert("L")
                data = np.asarray(image)
        except (UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise UnsupportedFormatError(
                f"{self.path} cannot be read as {format} ({_reason(err)}); convert large "
                "images to tiled TIFF",
                path=self.path,
            ) from err
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptFileError(
                f"{self.path} is a truncated or corrupt {format} ({_reason(err)})", path=self.path
            ) from err
        if data.dtype == np.int32 and data.size and 0 <= data.min() and data.max() <= 65535:
            data = data.astype(np.uint16)  # Pillow's mode "I" for 16-bit PNG
        data = data if data.ndim == 3 else data[..., np.newaxis]
        self._data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        self.channels = int(self._data.shape[0])
        self.shape = (int(self._data.shape[1]), int(self._data.shape[2]))
        self.dtype = self._data.dtype.newbyteorder("=")
        self._finish_init()

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[channels, y1 - y0, x1 - x0]`` (a copy) in the native dtype.

        Examples
        --------
        >>> ImageSource("v.png", "PNG").read(0, 1, 0, 1).dtype  # doctest: +SKIP
        dtype('uint8')
        """
        self._check_region(y0, y1, x0, x1)
        return self._data[:, y0:y1, x0:x1].copy()

    def describe(self) -> dict[str, Any]:
        """Format, dtype, shape and channels; tiling is the whole image.

        Examples
        --------
        >>> ImageSource("v.png", "PNG").describe()["tiling"]  # doctest: +SKIP
        {'whole_image': True}
        """
        info = self._base_description()
        info["tiling"] = {"whole_image": True}
        info["compression"] = {"PNG": "deflate", "BMP": "none", "JPEG": "jpeg"}[self.format]
        return info
