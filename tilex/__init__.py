"""tilex: find hidden paintings in gigapixel multispectral museum scans.

The public API, re-exported from one module per stage (see ``docs/design.md``).
The re-exports resolve on first use (PEP 562), so ``import tilex`` stays cheap
and imports neither torch, zarr nor any GPU library.

Examples
--------
>>> import tilex
>>> manifest = tilex.synth("scan", size=(512, 512), bands=4)     # doctest: +SKIP
>>> report = tilex.run(manifest, "out", device="cpu")             # doctest: +SKIP
>>> tilex.write_preview("out", "preview.png")                     # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

from tilex._version import __version__
from tilex.errors import TilexError

_EXPORTS = {
    "RunPlan": "tilex.plan",
    "RunReport": "tilex.job",
    "Scan": "tilex.scan",
    "batch": "tilex.campaign",
    "build_encoder": "tilex.encoder",
    "evaluate_output": "tilex.evaluate",
    "export_ome_tiff": "tilex.export",
    "load_network": "tilex.encoder",
    "open_output": "tilex.omezarr",
    "open_scan": "tilex.scan",
    "run": "tilex.job",
    "save_weights": "tilex.encoder",
    "synth": "tilex.synthetic",
    "validate_output": "tilex.validate",
    "write_preview": "tilex.preview",
}

__all__ = [
    "RunPlan",
    "RunReport",
    "Scan",
    "TilexError",
    "__version__",
    "batch",
    "build_encoder",
    "evaluate_output",
    "export_ome_tiff",
    "load_network",
    "open_output",
    "open_scan",
    "run",
    "save_weights",
    "synth",
    "validate_output",
    "write_preview",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tilex' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
