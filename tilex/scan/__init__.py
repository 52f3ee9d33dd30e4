"""Scans: a registered multispectral scan, one visible image plus N bands.

A scan is a visible image (RGB; RGBA with the alpha dropped; grayscale
replicated to three channels) and ``1 <= N <= 254`` registered grayscale
bands, each with a unique name and an optional wavelength in nm, all of the
same height and width, plus an optional pixel size in micrometres.

It is given in one of three ways (see :func:`open_scan`):

- a manifest ``scan.json`` (or a folder holding one), described in
  :mod:`tilex.scan.manifest`::

      {"visible": "visible.tif",
       "bands": [{"name": "ir1000", "file": "ir1000.tif", "wavelength_nm": 1000}],
       "pixel_size_um": 40}

- ``visible=PATH`` and ``bands=[(name, wavelength_nm_or_None, PATH), ...]``
  (the command line's ``--visible FILE --band NAME[@NM]=FILE``, parsed by
  :func:`parse_band_option`);
- one multi-channel OME-TIFF or (OME-)Zarr whose first three channels are the
  visible RGB and whose other channels are the bands.  Band names are the OME
  channel names (OME-XML ``Channel/@Name``, OME-Zarr ``omero.channels[].label``),
  else ``channel<i>``; a wavelength is the OME emission wavelength when given,
  else a trailing number of 100 to 20000 in the name (``ir1000``,
  ``b_850nm``), else none.

Pixel values: uint8 / 255, uint16 / 65535; float32 is reflectance in [0, 1]
unless an input range ``[LO, HI]`` maps other values to it, and a float input
that cannot be reflectance is refused (see :mod:`tilex.scan.input_range`).
NaN or infinity in a float input is refused with :class:`NonFiniteError` (see
:mod:`tilex.readers`).  Every check that can be made without reading pixels
is made at open, each with its own :mod:`tilex.errors` class and a message
naming the file, the value and the expectation.

Modules: :mod:`~tilex.scan.scan` (the :class:`Scan` value and its reads),
:mod:`~tilex.scan.open` (:func:`open_scan`), :mod:`~tilex.scan.manifest`
(``scan.json`` and the band checks), :mod:`~tilex.scan.input_range`
(the scaling of pixel values).

Example
-------
>>> with open_scan("scan.json") as scan:  # doctest: +SKIP
...     visible, bands = scan.read_region(0, 512, 0, 512)
>>> visible.shape, bands.shape  # doctest: +SKIP
((3, 512, 512), (8, 512, 512))
"""

from tilex.scan.input_range import REFLECTANCE_SLACK, parse_input_range
from tilex.scan.manifest import MANIFEST_NAME, MAX_BANDS, parse_band_option
from tilex.scan.open import BandSpec, open_scan
from tilex.scan.scan import Band, Scan

__all__ = [
    "MANIFEST_NAME",
    "MAX_BANDS",
    "REFLECTANCE_SLACK",
    "Band",
    "BandSpec",
    "Scan",
    "open_scan",
    "parse_band_option",
    "parse_input_range",
]
