"""Installing a DICOM edition from NEMA's DocBook files: `dvqa standard import` (a folder or zip) and
`dvqa standard fetch` (NEMA's site or an https mirror laid out like it).

Everything here treats its input as hostile, because an edition decides what `dvqa validate` passes:
- an edition's name becomes a folder name, so it must full-match NEMA's form (2024b), may not be a bundled
  edition's name, and every path built from it must resolve inside the editions folder;
- a zip's declared sizes are checked before anything is unpacked, and the bytes are counted while they are
  (declared sizes can lie), against a per-part and a total cap; a damaged zip is one sentence;
- a download is https only (plain http only with allow_http, for a mirror on this machine in tests),
  redirects included, and counted against the same caps;
- the tables are built in a private folder and moved into place under a lock, so concurrent imports of the
  same or different editions all end with a complete edition, the last one moved in.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dicom_validator.spec_reader.edition_reader import EditionParser, EditionReader

from dvqa.core.errors import EnvironmentProblem, InputError, UsageError
from dvqa.core.regular import MIB, open_regular
from dvqa.validate.standard import EDITION_NAME, Edition, imported_edition, editions_dir, reserved

PARTS = ("part03.xml", "part04.xml", "part06.xml")
PART_CAP = 512 * MIB  # one DocBook part; NEMA's largest (PS3.3) is well below it
TOTAL_CAP = 1024 * MIB  # the three parts together
PAGE_CAP = 4 * MIB  # the mirror's list of editions
TIMEOUT = 60.0  # seconds without an answer from the mirror
CHUNK = MIB


def _size(cap: int) -> str:
    return f"{cap // MIB} MiB" if cap >= MIB else f"{cap} bytes"


def check_name(name: str, where: str) -> None:
    """Refuse a name that is not NEMA's form or that a bundled edition has (exit 2)."""
    if not EDITION_NAME.fullmatch(name):
        raise UsageError(f"{where}: {name!r} is not a DICOM edition name like 2024b; give one with --edition.")
    if reserved(name):
        raise UsageError(f"{where}: {name} is the name of the edition bundled with dvqa and is reserved; an "
                         "imported edition needs another name (give it with --edition).")


def _quiet_dicom_validator() -> None:
    """dicom-validator's readers log to stdout through the root logger unless it has a handler."""
    root = logging.getLogger()
    if not root.hasHandlers():
        root.addHandler(logging.NullHandler())


def _mark_unevaluated(json_dir: Path) -> None:
    """dicom-validator's DocBook reader keeps no condition it cannot parse; mark those 1C/2C attributes (and
    module usages) so that the IOD layer says "not evaluated" for them, as for the bundled edition."""
    modules_path, iods_path = json_dir / "module_info.json", json_dir / "iod_info.json"
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    stack = list(modules.values())
    while stack:
        table = stack.pop()
        for key, value in table.items():
            if key.startswith("(") and isinstance(value, dict):
                if value.get("type") in ("1C", "2C") and "cond" not in value:
                    value["unevaluated"] = "a condition in PS3.3 that dicom-validator's parser cannot read"
                if "items" in value:
                    stack.append(value["items"])
    iods = json.loads(iods_path.read_text(encoding="utf-8"))
    for iod in iods.values():
        for usage in [*iod["modules"].values(), *iod.get("group_macros", {}).values()]:
            if usage.get("use", "").startswith("C") and "cond" not in usage:
                usage["unevaluated"] = usage["use"]
    modules_path.write_text(json.dumps(modules, sort_keys=True), encoding="utf-8")
    iods_path.write_text(json.dumps(iods, sort_keys=True), encoding="utf-8")


def _edition_named_in(part03: Path) -> str | None:
    with open(part03, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", "replace")
    found = re.search(r"PS\s?3\.3\s+(\d{4}[a-h])", head)
    return found.group(1) if found else None


def _copy(stream: BinaryIO, target: Path, cap: int, what: str) -> int:
    """Copy at most `cap` bytes, counting what really arrives (a declared size is only a claim)."""
    total = 0
    with open(target, "xb") as out:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                return total
            total += len(chunk)
            if total > cap:
                raise InputError(f"{what} is larger than dvqa's limit of {_size(cap)} for a DocBook part "
                                 f"({_size(TOTAL_CAP)} for the three); give NEMA's own files.")
            out.write(chunk)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the editions folder while an edition is moved into place."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _place(built: Path, name: str) -> Edition:
    """Move the built edition folder to editions/<name>: the old one (even a link) is moved aside into a
    private folder first and removed from there, so nothing outside the editions folder is ever touched."""
    root = Path(os.path.realpath(editions_dir()))
    target = root / name
    if not EDITION_NAME.fullmatch(name) or target.parent != root or Path(os.path.realpath(built)).parent.parent != root:
        raise UsageError(f"{name}: an edition's folder must be inside {root}; give a name like 2024b.")
    trash = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
    try:
        with _locked(root):
            if os.path.lexists(target):
                os.rename(target, trash / name)
            os.rename(built, target)
            # read back while the lock is held: once it is released another import may be moving this
            # name aside for its own copy, and the folder is briefly absent
            placed = imported_edition(root, name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    if placed is None:  # what was moved into place is no edition: say so
        raise EnvironmentProblem(f"{target}: the edition was replaced while it was installed; import it again.")
    return placed


def _install(work: Path, name: str, source: str) -> Edition:
    """Build dicom-validator's tables from work/<name>/docbook, mark them, and move them into place."""
    _quiet_dicom_validator()
    reader = EditionReader(work)
    (work / name / "json").mkdir(parents=True, exist_ok=True)
    try:
        reader.create_json_files(name)
    except Exception as exc:  # dicom-validator's readers raise many kinds on DocBook they cannot read
        raise InputError(f"the DocBook files of edition {name} cannot be read by dicom-validator "
                         f"({type(exc).__name__}: {exc}); give NEMA's part03.xml, part04.xml and part06.xml.") from None
    json_dir = work / name / "json"
    _mark_unevaluated(json_dir)
    digests = ", ".join(f"{p} sha256 {_file_sha256(work / name / 'docbook' / p)}" for p in PARTS)
    (work / name / "source.txt").write_text(f"{source} ({digests})\n", encoding="utf-8")
    return _place(work / name, name)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unzip(source: Path, staging: Path) -> None:
    """The three parts out of a zip (found anywhere inside; the first of each name), within the caps."""
    fd = open_regular(source, "the DocBook zip")
    with os.fdopen(fd, "rb") as handle:
        if not zipfile.is_zipfile(handle):
            raise InputError(f"{source}: give a folder or a zip file with NEMA's DocBook part03.xml, part04.xml "
                             "and part06.xml.")
        try:
            with zipfile.ZipFile(handle) as archive:
                chosen: dict[str, zipfile.ZipInfo] = {}
                for member in archive.infolist():
                    part = PurePosixPath(member.filename.replace("\\", "/")).name
                    if part in PARTS and not member.is_dir():
                        chosen.setdefault(part, member)
                for part, member in chosen.items():
                    if member.file_size > PART_CAP or sum(m.file_size for m in chosen.values()) > TOTAL_CAP:
                        raise InputError(f"{source}: {member.filename} says it unpacks to {member.file_size} bytes, "
                                         f"over dvqa's limit of {_size(PART_CAP)} for a DocBook part "
                                         f"({_size(TOTAL_CAP)} for the three); give NEMA's own files.")
                left = TOTAL_CAP
                for part, member in chosen.items():
                    with archive.open(member) as stream:
                        left -= _copy(stream, staging / part, min(PART_CAP, left), f"{source}: {member.filename}")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise InputError(f"{source}: the zip is damaged or uses a feature dvqa cannot unpack ({exc}); download "
                             "it again or unpack it and import the folder.") from None


def _copy_folder(source: Path, staging: Path) -> None:
    left = TOTAL_CAP
    for part in PARTS:
        found = next(iter(sorted(source.rglob(part))), None)
        if found is None:
            continue
        with os.fdopen(open_regular(found, f"DocBook {part}"), "rb") as stream:
            left -= _copy(stream, staging / part, min(PART_CAP, left), str(found))


def import_docbook(source: Path, name: str | None = None) -> Edition:
    """Install an edition from NEMA's DocBook files: a folder or a zip holding part03.xml, part04.xml and
    part06.xml (found anywhere inside). The edition's name is read from PS3.3 unless given."""
    if name is not None:
        check_name(name, "--edition")
    editions_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=editions_dir()))
    try:
        staging = work / "staging"
        staging.mkdir()
        if source.is_dir():
            _copy_folder(source, staging)
        else:
            _unzip(source, staging)
        missing = [p for p in PARTS if not (staging / p).is_file()]
        if missing:
            raise InputError(f"{source}: {', '.join(missing)} not found; the IOD layer needs PS3.3, PS3.4 and "
                             "PS3.6 in DocBook (https://dicom.nema.org/medical/dicom/EDITION/source/docbook/).")
        name = name or _edition_named_in(staging / "part03.xml")
        if not name:
            raise UsageError(f"{source}: the edition is not named in part03.xml; give it with --edition "
                             "(e.g. 2024b).")
        check_name(name, f"{source}")
        (work / name).mkdir()
        os.replace(staging, work / name / "docbook")
        return _install(work, name, f"imported from {source}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an address the mirror itself would be allowed at."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        _check_url(newurl, self.allow_http, f"{req.full_url} redirects to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str, allow_http: bool, where: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise UsageError(f"{where}: dvqa downloads editions over https only (a mirror on this machine may use "
                         "http with --allow-http); give an https:// address.")


def _download(opener: urllib.request.OpenerDirector, url: str, what: str, cap: int,
              target: Path | None = None) -> bytes:
    """The body at `url`, refused past `cap` bytes whatever Content-Length says; to `target` if given."""
    def too_big(size: str) -> EnvironmentProblem:
        return EnvironmentProblem(f"{url}: {what} is {size}, over dvqa's limit of {_size(cap)} for it; check "
                                  "the mirror, or import NEMA's files with `dvqa standard import`.")

    try:
        with opener.open(url, timeout=TIMEOUT) as answer:
            declared = answer.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise too_big(f"{declared} bytes")
            if target is not None:
                try:
                    _copy(answer, target, cap, url)
                except InputError:
                    raise too_big("larger") from None
                return b""
            body = answer.read(cap + 1)
            if len(body) > cap:
                raise too_big("larger")
            return body
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnvironmentProblem(f"{url}: {what} could not be downloaded ({reason}); check the network and the "
                                 "address, or import downloaded files with `dvqa standard import`.") from None


def _resolve(asked: str, listed: list[str]) -> str | None:
    """dicom-validator's rules: an exact name, a year (its newest edition) or "current" (the newest)."""
    if asked in listed:
        return asked
    if re.fullmatch(r"20[0-9]{2}", asked):
        return next((e for e in reversed(listed) if e.startswith(asked)), None)
    return listed[-1] if asked == "current" and listed else None


def fetch(name: str, base_url: str | None = None, allow_http: bool = False) -> Edition:
    """Download an edition's DocBook files (NEMA's site, or a mirror laid out like it) and install it. Only
    when the user asks: validation never touches the network. The mirror's page is trusted for nothing but
    the list of names, and only names in NEMA's form."""
    if not (EDITION_NAME.fullmatch(name) or name == "current" or re.fullmatch(r"20[0-9]{2}", name)):
        raise UsageError(f"{name!r} is not a DICOM edition: give a name like 2024b, a year, or current.")
    if reserved(name):
        check_name(name, "dvqa standard fetch")
    base = base_url or EditionReader.base_url
    base = base if base.endswith("/") else base + "/"
    _check_url(base, allow_http, f"--url {base}")
    opener = urllib.request.build_opener(_Redirects(allow_http))
    parser = EditionParser()
    parser.feed(_download(opener, base, "the list of editions", PAGE_CAP).decode("utf-8", "replace"))
    parser.close()
    listed = sorted({e.strip() for e in parser.editions if EDITION_NAME.fullmatch(e.strip())})
    resolved = _resolve(name, listed)
    if resolved is None:
        raise EnvironmentProblem(f"{base}: no edition {name!r} listed there; check the name, or import "
                                 "downloaded files with `dvqa standard import`.")
    check_name(resolved, f"{base}")
    editions_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=editions_dir()))
    try:
        docbook = work / resolved / "docbook"
        docbook.mkdir(parents=True)
        segment = "current" if resolved == listed[-1] else resolved  # where NEMA keeps its newest edition
        left = TOTAL_CAP
        for part in PARTS:
            url = f"{base}{segment}/source/docbook/{part.removesuffix('.xml')}/{part}"
            _download(opener, url, f"PS3.{int(part[4:6])} of edition {resolved}", min(PART_CAP, left), docbook / part)
            left -= (docbook / part).stat().st_size
        return _install(work, resolved, f"fetched from {base}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
