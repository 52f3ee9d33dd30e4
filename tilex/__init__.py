"""tilex: find hidden paintings in gigapixel multispectral museum scans.

The public API, re-exported from one module per stage.
"""

from tilex._version import __version__
from tilex.errors import TilexError

__all__ = ["TilexError", "__version__"]
