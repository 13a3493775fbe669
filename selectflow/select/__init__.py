"""Data selectors: pure functions from a pool (DOCS table) to an ordered selection plus per-document decisions.

- `zip.zip_select(docs, ZipConfig(...), progress=None)` -> `ZipResult` (ZIP, Entropy Law; modes exact | zstd | gain)
"""

from selectflow.select.zip import DECISIONS_SCHEMA, ZipConfig, ZipError, ZipResult, record_repr, zip_select

__all__ = ["DECISIONS_SCHEMA", "ZipConfig", "ZipError", "ZipResult", "record_repr", "zip_select"]
