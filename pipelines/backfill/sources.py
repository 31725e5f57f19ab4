"""Finding archive files and cutting them into shards: the unit of work, of resume and of output.

A shard is a contiguous range of one file (physical lines of a JSONL file, rows of a Parquet file). Cutting
needs one pass over JSONL files to count lines (Parquet row counts come from the footer); the plan is then
kept in the manifest so a resumed run never re-counts. Ranges are stable, so a shard always maps to the same
input rows and the same output file names, which is what makes re-running a shard idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.errors import InputError

Format = Literal["jsonl", "jsonl.gz", "parquet"]

SUFFIXES: tuple[tuple[str, Format], ...] = (
    (".jsonl.gz", "jsonl.gz"),
    (".ndjson.gz", "jsonl.gz"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
)


class SourceFile(BaseModel):
    """One input file; ``size`` lets a resumed run notice that the archive changed under it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="Local absolute path, or an fsspec URL such as s3://bucket/key.jsonl.gz.")
    format: Format
    size: int = Field(ge=0)


class ShardSpec(BaseModel):
    """A range ``[start, stop)`` of one file holding ``rows`` non-blank records."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_id: int = Field(ge=0)
    source: SourceFile
    start: int = Field(ge=0, description="First physical line (JSONL) or row (Parquet), 0-based.")
    stop: int = Field(ge=0, description="One past the last line or row.")
    byte_offset: int = Field(default=0, ge=0, description="Where line ``start`` begins (plain JSONL only).")
    rows: int = Field(ge=1, description="Records the shard yields: non-blank lines, or Parquet rows.")

    @property
    def name(self) -> str:
        """Stable file stem for every output of this shard."""
        return f"shard-{self.shard_id:05d}"


def format_of(path: str) -> Format | None:
    lowered = path.lower()
    for suffix, fmt in SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    return None


def open_fs(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for a URL, with a missing filesystem package turned into an actionable error."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except ImportError as exc:
        raise InputError(f"{url}: {exc} (install the fsspec filesystem package for this URL)") from exc
    except ValueError as exc:
        raise InputError(f"{url}: {exc}") from exc


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol


def _hidden(path: str, root: str) -> bool:
    """Spark/Hadoop markers (``_SUCCESS``) and dot files inside a folder are not data."""
    relative = path[len(root) :].lstrip("/")
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def discover(inputs: Sequence[str]) -> list[SourceFile]:
    """Every supported file named by ``inputs`` (files or folders, searched recursively), sorted by URL."""
    if not inputs:
        raise InputError("no INPUT given: name at least one file or folder")
    found: dict[str, SourceFile] = {}
    for item in inputs:
        fs, path = open_fs(item)
        if not fs.exists(path):
            raise InputError(f"{item}: no such file or folder")
        if fs.isdir(path):
            paths = [p for p in fs.find(path) if format_of(p) and not _hidden(p, path)]
            if not paths:
                raise InputError(f"{item}: no .jsonl, .jsonl.gz or .parquet files in this folder")
        elif format_of(path) is None:
            raise InputError(f"{item}: not a .jsonl, .jsonl.gz or .parquet file")
        else:
            paths = [path]
        for p in paths:
            url = p if _is_local(fs) else fs.unstrip_protocol(p)
            fmt = format_of(p)
            assert fmt is not None
            found[url] = SourceFile(url=url, format=fmt, size=int(fs.size(p)))
    return [found[url] for url in sorted(found)]


def open_binary(source: SourceFile) -> Any:
    """A binary file object for a source; ``.gz`` is decompressed on the fly."""
    import fsspec

    compression = "gzip" if source.format == "jsonl.gz" else None
    try:
        return fsspec.open(source.url, "rb", compression=compression).open()
    except ImportError as exc:
        raise InputError(f"{source.url}: {exc}") from exc


def _cut_jsonl(source: SourceFile, shard_rows: int) -> Iterator[tuple[int, int, int, int]]:
    start = offset = rows = position = lines = 0
    with open_binary(source) as fh:
        for index, line in enumerate(fh):
            lines = index + 1
            if line.strip():
                if rows == shard_rows:
                    yield start, index, offset, rows
                    start, offset, rows = index, position, 0
                rows += 1
            position += len(line)
    if rows:
        yield start, lines, offset, rows


def _cut_parquet(source: SourceFile, shard_rows: int) -> Iterator[tuple[int, int, int, int]]:
    import pyarrow.parquet as pq

    with open_binary(source) as fh:
        total = pq.ParquetFile(fh).metadata.num_rows
    for start in range(0, total, shard_rows):
        stop = min(start + shard_rows, total)
        yield start, stop, 0, stop - start


def plan_shards(files: Sequence[SourceFile], shard_rows: int) -> list[ShardSpec]:
    """Cut every file into shards of at most ``shard_rows`` records, numbered in file order."""
    shards: list[ShardSpec] = []
    for source in files:
        cut = _cut_parquet if source.format == "parquet" else _cut_jsonl
        try:
            ranges = list(cut(source, shard_rows))
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(f"{source.url}: unreadable ({exc})") from exc
        for start, stop, offset, rows in ranges:
            shards.append(
                ShardSpec(
                    shard_id=len(shards), source=source, start=start, stop=stop, byte_offset=offset, rows=rows
                )
            )
    return shards
