"""A toy document filter, declared here only: drops documents shorter than `min_chars` characters."""

from typing import Literal

from pydantic import Field

from selectflow.config import FilterOptions
from selectflow.stages.base import Kind, Stage, register


class MinLengthOptions(FilterOptions):
    method: Literal["min_length"] = "min_length"
    min_chars: int = Field(40, ge=1, description="Documents with fewer characters are dropped.")


def too_short(text: str, options: MinLengthOptions) -> str | None:
    if len(text) < options.min_chars:
        return f"{len(text)} characters, fewer than min_chars={options.min_chars}"
    return None


MIN_LENGTH = register(Stage("filter_min_length", Kind.FILTER, options=MinLengthOptions, run=f"{__name__}:too_short"),
                      before="dedup_exact")
