"""The graph forms: what a generator graph takes and gives, named once for export, the runners, the adapter, the
engine choice and the run folder.

Inputs: ``tensor`` (upstream's (N, 36, H, W) float32 one-hot + edges), ``maps`` (the (N, H, W) uint8 label ids and
int32 instance ids; the encoding inside the graph), ``stems`` (the two 7x7 stem convolutions computed on the host
from the maps, :mod:`.stems`). Outputs: ``float`` (upstream's (N, 3, H, W) in [-1, 1]) and ``uint8`` (the picture,
(N, H, W, 3), with ``tensor2im`` inside the graph). Plain strings, so flags, JSON and ONNX metadata stay as they were.
"""
TENSOR = "tensor"
MAPS = "maps"
STEMS = "stems"
INPUT_FORMATS = (TENSOR, MAPS, STEMS)

FLOAT = "float"
UINT8 = "uint8"
OUTPUT_FORMATS = (FLOAT, UINT8)
