"""Land extracts: copy each file of a date into an immutable landing area with a manifest.

Files are stored content-addressed (``<area>/<date>/<file stem>.<sha256[:16]>.csv``, read-only),
so re-landing an identical file is a no-op and a corrected file for the same date lands beside
the old one instead of overwriting the evidence. ``manifest.json`` names the current version of
each file for the date; the loader reads only what the manifest lists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from tierline import contract
from tierline.errors import ExtractError

CHUNK = 4 * 1024 * 1024


@dataclass
class LandedFile:
    file: str
    path: str
    sha256: str
    bytes: int
    rows: int  # physical lines after the header
    source: str
    landed_at: str


def _scan(path: Path) -> tuple[str, int, int]:
    digest = hashlib.sha256()
    newlines = 0
    size = 0
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    lines = newlines + (1 if size and last != b"\n" else 0)
    return digest.hexdigest(), size, max(lines - 1, 0)


def land_extracts(source_root: Path, as_of: date, area: Path) -> dict:
    """Copy ``<source_root>/<as_of>/*.csv`` into the landing area; return the manifest."""
    source_dir = Path(source_root) / as_of.isoformat()
    if not source_dir.is_dir():
        raise ExtractError(
            f"no extract folder {source_dir}: expected <landing>/<YYYY-MM-DD>/<file>.csv (EXTRACTS.md)"
        )
    target_dir = area / as_of.isoformat()
    target_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = target_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}}

    unknown = sorted(p.name for p in source_dir.glob("*.csv") if p.name.lower() not in contract.BY_FILE)
    for source in sorted(source_dir.iterdir()):
        name = source.name.lower()
        if name not in contract.BY_FILE or not source.is_file():
            continue
        sha, size, rows = _scan(source)
        stem = name.removesuffix(".csv")
        landed = target_dir / f"{stem}.{sha[:16]}.csv"
        if not landed.exists():
            tmp = landed.with_suffix(".partial")
            shutil.copyfile(source, tmp)
            tmp.chmod(0o444)
            tmp.rename(landed)
        manifest["files"][name] = asdict(
            LandedFile(name, str(landed), sha, size, rows, str(source.resolve()),
                       datetime.now(UTC).isoformat(timespec="seconds"))
        )
    manifest["extract_date"] = as_of.isoformat()
    manifest["ignored_files"] = unknown
    tmp_manifest = manifest_path.with_suffix(".partial")
    tmp_manifest.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    tmp_manifest.replace(manifest_path)
    return manifest
