"""What defines a run: :class:`RunSettings` (saved in the manifest, checked on resume) and :class:`RunReport`
(what a run did). Below the run's stages, so that the folder, the stream and the engines all read one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from ..data.labelmaps import MapOptions
from ..errors import Failures
from ..runners.open import EngineSettings
from .profile import format_profile


@dataclass
class RunSettings(EngineSettings):
    """What defines a run's outputs: how the model runs (:class:`EngineSettings`) and how the maps are read and the
    pictures written; saved in the manifest and checked on resume."""

    batch_size: int = 1
    image_format: str = "png"
    size_multiple: int = 32
    instances: str = "files"      # files | labels | none (labelmaps); "none" goes with use_instance=False
    fit: str = "resize"           # resize | pad (labelmaps)
    encoders: int = 0             # threads encoding and writing pictures (0: :func:`.stream.default_encoders`)

    def identity(self) -> Dict[str, object]:
        """The settings that change the pictures (a resume with different ones would mix outputs).

        Not in it: what only changes speed or which files are written (batch size, streams, workers, encoders,
        format, --save-raw, --profile). The model's own identity is :func:`.folder.resume_model_identity`.
        """
        keys = ["backend", "fp16", "label_nc", "use_instance", "size_multiple"]
        # each only when not its default, so folders written before the option existed still resume
        if self.fast_convs:
            keys.append("fast_convs")
        if self.bf16:
            keys.append("bf16")
        if self.instances == "labels":  # "none" is use_instance=False, already there
            keys.append("instances")
        if self.fit != "resize":
            keys.append("fit")
        identity = {k: getattr(self, k) for k in keys}
        kind = self.device_kind()
        if kind != "cpu":  # a GPU rounds differently; only off the CPU, so older CPU folders still resume
            identity["device"] = kind
        return identity

    def map_options(self) -> MapOptions:
        """How this run reads its maps (:mod:`labelmaps`)."""
        return MapOptions(label_nc=self.label_nc, instances=self.instances if self.use_instance else "none",
                          fit=self.fit, base=self.size_multiple)


@dataclass
class RunReport:
    output: Path
    done: int = 0
    skipped: int = 0
    failed: Failures = field(default_factory=lambda: Failures("image"))  #: the run folder's record
    seconds: float = 0.0
    compute_seconds: float = 0.0
    index: Optional[Path] = None
    profile: Optional[Dict[str, object]] = None  #: run --profile's summary (:mod:`.profile`)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"run: {self.done} pictures in {self.seconds:.1f} s ({self.images_per_second:.3f} images/s, "
                f"compute {self.compute_seconds:.1f} s), {self.skipped} already done -> {self.output}")
        if self.profile:
            text = format_profile(self.profile) + "\n" + text
        if self.index:
            text += f"\nopen {self.index}"
        return text
