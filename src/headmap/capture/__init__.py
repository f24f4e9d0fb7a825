"""Stage 2, capture: tap a model's attention while it runs its own kernels, recompute the asked
heads block by block, and hand the blocks to a consumer (maps or statistics)."""

from headmap.capture.audio import Audio
from headmap.capture.encoding import Encoded, encode_parts
from headmap.capture.engine import CapturePlan, Consumer, MapStore, capture, stream
from headmap.capture.recompute import Block

__all__ = [
    "Audio",
    "Block",
    "CapturePlan",
    "Consumer",
    "Encoded",
    "MapStore",
    "capture",
    "encode_parts",
    "stream",
]
