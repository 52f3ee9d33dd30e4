"""``tilex view``: a local web viewer of one output (the server; its page is in ``static/``).

:mod:`~tilex.viewer.server`
    :class:`ViewServer`, the read-only HTTP server on the loopback interface.
:mod:`~tilex.viewer.tiles`
    What the page asks for: the output's description, tiles of raw fields, one pixel.
:mod:`~tilex.viewer.store`
    Opening an output so that nothing outside its folder can be read.

``static/`` holds the page (``index.html``, ``viewer.js``, ``viewer.css``),
and ``static/iiif/`` the page that ``tilex export --format iiif`` copies next
to its tiles, with OpenSeadragon vendored in ``static/vendor/openseadragon/``
(see its ``VENDOR.md``).
"""

from tilex.viewer.server import ViewServer
from tilex.viewer.store import open_inside

__all__ = ["ViewServer", "open_inside"]
