"""The data a run reads, as typed values: a SynthAU configuration or a prepared dataset's loading settings.

`DataConfig` is their union, told apart by `source` ("prepared"; a SynthAU configuration has no such field), so
that a RunSpec carries typed data and serialises exactly as the dictionaries it held before (the run ids stay).
This module is light on purpose: specs and the store import it without the rendering or loading code.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator

GENERATOR_VERSION = 3  # 2: the true landmarks are stored; 3: lip AUs shape first, both profiles framed alike


def bounded_int(low: int, high: int) -> Any:
    """An int field from `low` to `high`. Anything else (a string, a float, a bool, an int out of range) is
    refused, never coerced, with one message that gives the range."""

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, got {value!r}")
        return value

    return Annotated[int, Field(ge=low, le=high), BeforeValidator(check)]


class SynthConfig(BaseModel):
    """What to generate. Counts left as None take the profile's defaults (BP4D/DISFA-like sizes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    profile: str = "bp4d"
    subjects: bounded_int(1, 1000) | None = None
    sequences_per_subject: bounded_int(1, 100) | None = None
    frames_per_sequence: bounded_int(1, 100_000) | None = None
    frame_stride: bounded_int(1, 10_000) = Field(
        10, description="render every n-th frame; labels evolve at the full rate"
    )
    image_size: bounded_int(32, 1024) = 112
    seed: bounded_int(0, 2**32 - 1) = 0
    occurrence_threshold: float = Field(2.0, gt=0.0, le=5.0, description="occurrence = intensity >= this")
    pose: Literal["frontal", "bins"] = Field("frontal", description="near-frontal jitter, or every frame in all 15 pose bins")
    difficulty: float = Field(
        1.0, gt=0.0, le=10.0, description="divides the ratio of AU cue strength to identity/capture nuisance"
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        from aunce_bench.data.synth.profiles import PROFILES  # rendering code: imported when a config is checked

        if name not in PROFILES:
            raise ValueError(str(PROFILES.unknown(name)))  # pydantic names the field
        return name

    def resolved(self) -> "SynthConfig":
        """The same configuration with every default count filled in from the profile."""
        from aunce_bench.data.synth.profiles import PROFILES

        stats = PROFILES[self.profile].labels
        return self.model_copy(
            update={
                "subjects": self.subjects or stats.n_subjects,
                "sequences_per_subject": self.sequences_per_subject or stats.sequences_per_subject,
                "frames_per_sequence": self.frames_per_sequence or stats.frames_per_sequence,
            }
        )

    def content_hash(self) -> str:
        payload = {"generator_version": GENERATOR_VERSION, **self.resolved().model_dump()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def dataset_name(self) -> str:
        """The SynthAU profile it renders (bp4d, disfa)."""
        return self.profile

    @property
    def cue_strength(self) -> float:
        return self.difficulty**-0.5

    @property
    def nuisance(self) -> float:
        return self.difficulty**0.5


class PreparedConfig(BaseModel):
    """How a run loads a prepared dataset: which frames, at what size, labelled at which threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source: Literal["prepared"] = "prepared"
    dataset: str = Field(pattern=r"^[a-z0-9][a-z0-9_+-]*$", description="a prepared dataset's name")
    frame_stride: bounded_int(1, 10_000) = Field(1, description="keep every n-th frame of each sequence")
    image_size: bounded_int(32, 1024) | None = Field(None, description="resize the stored crops (None: keep 256)")
    occurrence_threshold: float = Field(2.0, gt=0.0, le=5.0, description="labels from stored intensities (DISFA)")
    pose_bins: list[str] | None = Field(None, min_length=1, description="keep only these pose bins / views (None: all)")
    fingerprint: str = Field("", description="content hash of the prepared index")

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()

    @property
    def dataset_name(self) -> str:
        return self.dataset


def data_source(value: Any) -> str:
    """"synth" or "prepared": what a data description (a model, or its dictionary) reads from."""
    return value.get("source", "synth") if isinstance(value, dict) else getattr(value, "source", "synth")


DataConfig = Annotated[Union[Annotated[SynthConfig, Tag("synth")], Annotated[PreparedConfig, Tag("prepared")]],
                       Discriminator(data_source)]
