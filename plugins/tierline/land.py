"""Land extracts: copy each file of a date into an immutable landing area with a manifest.

Files are stored content-addressed and read-only (0400, in 0700 folders: they carry personal
data) under a folder per source landing folder
(``<area>/<source key>/<date>/<file stem>.<sha256[:16]>.csv``), so re-landing an identical file
is a no-op, a corrected file lands beside the old one instead of overwriting the evidence, and two
landing folders (or two warehouses fed from different folders) sharing one ``TIERLINE_HOME`` never
see each other's files. The manifest of a landing is the date folder as it is now: a file removed
from the folder is not in it, whatever an earlier landing held. The run keeps its own copy of the
manifest, and the loader reads only what that copy lists.

A folder the pipeline cannot read unambiguously is refused with an error naming the files: two
names that differ only in case for one contract file, a link that leads out of the landing folder,
or a contract file that is not a regular file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


def source_key(source_root: Path) -> str:
    """The landing area's folder for one source landing folder: readable name + hash of its real path."""
    real = str(Path(source_root).resolve())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(real).name or "root")[:40]
    return f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:12]}"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _contract_files(source_dir: Path, source_root: Path) -> tuple[dict[str, Path], list[str]]:
    """The folder's contract files by lower-case name, and the names of the others (ignored)."""
    root = source_root.resolve()
    found: dict[str, list[Path]] = {}
    ignored = []
    for entry in sorted(source_dir.iterdir()):
        name = entry.name.lower()
        if name not in contract.BY_FILE:
            ignored.append(entry.name)
            continue
        found.setdefault(name, []).append(entry)
    files = {}
    for name, entries in found.items():
        if len(entries) > 1:
            raise ExtractError(
                f"{source_dir}: {' and '.join(e.name for e in entries)} are the same contract file ({name}) "
                "in different case; keep one of them")
        entry = entries[0]
        real = entry.resolve()
        if not _inside(real, root):
            raise ExtractError(f"{entry}: is a link to {real}, outside the landing folder {root}; "
                               "copy the file into the landing folder instead")
        if not real.is_file():
            raise ExtractError(f"{entry}: is not a regular file")
        files[name] = real
    return files, ignored


def _land_file(source: Path, target_dir: Path, stem: str) -> tuple[Path, str, int, int]:
    """Copy a file while hashing it, so the landed bytes are exactly the hashed ones."""
    digest = hashlib.sha256()
    newlines = size = 0
    last = b""
    tmp = target_dir / f".{stem}.{os.getpid()}.partial"
    with source.open("rb") as handle, tmp.open("wb") as out:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
            out.write(chunk)
    sha = digest.hexdigest()
    landed = target_dir / f"{stem}.{sha[:16]}.csv"
    if landed.exists():
        tmp.unlink()
    else:
        tmp.chmod(0o400)  # read-only, and its owner's only: extracts carry personal data
        tmp.rename(landed)
    lines = newlines + (1 if size and last != b"\n" else 0)
    return landed, sha, size, max(lines - 1, 0)


def land_extracts(source_root: Path, as_of: date, area: Path) -> dict:
    """Copy ``<source_root>/<as_of>/*.csv`` into the landing area; return the manifest."""
    source_root = Path(source_root)
    source_dir = source_root / as_of.isoformat()
    if not source_dir.is_dir():
        raise ExtractError(
            f"no extract folder {source_dir}: expected <landing>/<YYYY-MM-DD>/<file>.csv (EXTRACTS.md)"
        )
    if not _inside(source_dir.resolve(), source_root.resolve()):
        raise ExtractError(f"{source_dir}: is a link to {source_dir.resolve()}, outside the landing folder "
                           f"{source_root.resolve()}")
    files, ignored = _contract_files(source_dir, source_root)
    target_dir = Path(area) / source_key(source_root) / as_of.isoformat()
    target_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"extract_date": as_of.isoformat(), "source": str(source_dir.resolve()), "files": {},
                "ignored_files": ignored}
    for name, source in sorted(files.items()):
        landed, sha, size, rows = _land_file(source, target_dir, name.removesuffix(".csv"))
        manifest["files"][name] = asdict(LandedFile(
            name, str(landed), sha, size, rows, str(source), datetime.now(UTC).isoformat(timespec="seconds")))
    manifest_path = target_dir / "manifest.json"
    tmp_manifest = target_dir / f".manifest.{os.getpid()}.partial"
    tmp_manifest.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    tmp_manifest.replace(manifest_path)
    return manifest
