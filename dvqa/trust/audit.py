"""A tamper-evident audit trail: append-only JSON Lines, each record chained to the one before.

Every record carries `seq` (1, 2, 3 ...) and `prev`, the SHA-256 of the previous
record's line, so deleting, reordering or editing a record breaks the chain at a
place `verify` names. With a key (`--audit-key-env`), each record also carries an
HMAC-SHA256, so an edited record is caught at that very record and the chain
cannot be recomputed by someone without the key; without one, anyone who can
write the file can rebuild the whole chain, so `verify` says the log is not
tamper-evident. Cutting records off the end leaves a valid chain even with a key:
`dvqa audit head` prints RECORDS:HASH to keep somewhere else, and
`verify --expect-head` then catches a log cut short or rewritten up to there.

Appends take an exclusive lock (flock) for read-last-record + write + fsync, so
concurrent dvqa processes interleave whole records. A process killed mid-write
leaves a line without its newline ("torn"); `verify` reports it and checks
everything before it, and the next append closes it and records its length and
hash in `torn_previous`, so the chain stays verifiable and the damage stays visible.

The log holds patient identifiers (it must, to be useful): it is PHI, and dvqa
creates it readable and writable by its owner only (0600).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import av
import pydicom

from dvqa import __version__
from dvqa.core import outputs
from dvqa.core.digest import sha256_file
from dvqa.core.errors import EnvironmentProblem, InputError, UsageError
from dvqa.core.regular import open_regular

GENESIS = "0" * 64
MIN_KEY_BYTES = 32  # an HMAC-SHA256 key shorter than its output weakens it; an empty one is no key at all
LINE_CAP = 64 << 20  # no record dvqa writes comes near this; a longer "line" is not an audit log


def check_key(key: bytes, source: str) -> bytes:
    """The audit key, refused when empty or short: an empty variable used to switch HMAC off silently."""
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"{source}: the audit key is {len(key)} bytes; give at least {MIN_KEY_BYTES} random bytes "
                         "(e.g. the output of 'openssl rand -hex 32').")
    return key


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(record: dict, key: bytes) -> str:
    body = {k: v for k, v in record.items() if k != "hmac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def environment() -> dict[str, object]:
    """Who, where and with what: the part of every record that is not about the file."""
    return {
        "user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(), "cwd": _cwd(),
        "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
        "versions": {"dvqa": __version__, "pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info,
                     "pydicom": pydicom.__version__},
    }


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working folder was removed under us
        return ""


def absolute(path: Path | str) -> str:
    """A path as the trail keeps it: absolute (links not resolved), so it still finds the file later."""
    return str(Path(path).absolute())


def _split_last(data: bytes) -> tuple[bytes, bytes]:
    """(complete part ending in a newline, torn tail without one)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


class AuditLog:
    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self.key = check_key(key, str(path)) if key is not None else None

    def check(self) -> list[str]:
        """Open the log once before any work: a log dvqa cannot append to fails the command before it
        converts or sends anything. Returns warnings (a log others can read)."""
        fd, warnings = outputs.open_append(self.path)
        os.close(fd)
        return warnings

    def append(self, event: dict) -> dict:
        """Append one record (environment + `event`), locked, fsync'd; returns the record.

        All of the record reaches the disk or none of it: a write that fails part-way (a full disk
        or quota) is cut back to where the log ended, and EnvironmentProblem says so - the caller
        must then not claim the work it records as done.
        """
        try:
            fd, _ = outputs.open_append(self.path)
        except OSError as exc:
            raise _append_failed(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            complete, torn = _split_last(_tail(fd))
            last = _last_record(complete.splitlines())
            record: dict = {"seq": (last[0]["seq"] + 1) if last else 1,
                            "prev": _line_hash(last[1]) if last else GENESIS}
            prefix = b""
            if torn:
                prefix = b"\n"  # close the torn line; the record says what it was
                record["torn_previous"] = {"bytes": len(torn), "sha256": _line_hash(torn)}
            record.update(environment())
            record.update(event)
            if self.key:
                record["hmac"] = _mac(record, self.key)
            data = prefix + _canonical(record) + b"\n"
            try:
                written = 0
                while written < len(data):  # os.write may write part of it on a nearly full disk
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)  # no short record: the log ends where it did
                    os.fsync(fd)
                except OSError:
                    pass
                raise _append_failed(self.path, exc) from None
            return record
        finally:
            os.close(fd)  # releases the lock


class AuditWriteFailed(EnvironmentProblem):
    """The record could not be appended; whatever it would have recorded must not be claimed as done."""


def _append_failed(path: Path, exc: OSError) -> AuditWriteFailed:
    reason = outputs.machine_fault(exc) or exc.strerror or str(exc)
    return AuditWriteFailed(f"{path}: the audit record could not be written ({reason}).")


def _tail(fd: int) -> bytes:
    """The end of the log: enough to hold its last complete record (read back, not the whole log)."""
    size = os.fstat(fd).st_size
    block = 1 << 16
    while True:
        start = max(0, size - block)
        data = os.pread(fd, size - start, start)
        complete, _ = _split_last(data)
        # two newlines in view (or the file start) means the last complete line is whole
        if start == 0 or complete.count(b"\n") >= 2:
            return data if start == 0 else data[data.index(b"\n") + 1:]
        block *= 4


def _last_record(lines: list[bytes]) -> tuple[dict, bytes] | None:
    for line in reversed(lines):
        try:
            return json.loads(line), line
        except json.JSONDecodeError:
            continue  # a torn line closed by a later append: not a record
    return None


@dataclass
class ChainCheck:
    records: int = 0
    head: str = GENESIS  # hash of the last record's line: keep it elsewhere to pin the log
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keyed: bool = False  # every record's HMAC was checked with the key
    pinned: bool = False  # the log still holds the head kept elsewhere (expect_head)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def tamper_evident(self) -> bool:
        """Whether someone who can write the log could have rewritten it undetected: without a key and a
        head kept elsewhere, they could (the chain is just SHA-256, anyone can recompute it)."""
        return self.keyed or self.pinned

    @property
    def head_text(self) -> str:
        """The head as `audit head` prints it and `--expect-head` takes it: RECORDS:SHA256."""
        return f"{self.records}:{self.head}"

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "tamper_evident": self.tamper_evident, **self.__dict__}


def parse_head(text: str) -> tuple[int, str]:
    """`--expect-head RECORDS:SHA256` as `dvqa audit head` printed it."""
    count, _, digest = text.strip().partition(":")
    if not (count.isdigit() and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise UsageError(f"--expect-head {text}: not a head; give the RECORDS:SHA256 'dvqa audit head' printed.")
    return int(count), digest


def _lines(path: Path):
    """(line number, bytes with the newline removed, whether it ended in a newline), read one line at a time
    from a regular file: a FIFO or device is refused, and no line may exceed LINE_CAP."""
    fd = open_regular(path, "the audit log")
    with os.fdopen(fd, "rb") as handle:
        number = 0
        while True:
            line = handle.readline(LINE_CAP + 1)
            if not line:
                return
            number += 1
            if len(line) > LINE_CAP:
                raise InputError(f"{path}: line {number} of the audit log is over {LINE_CAP // (1 << 20)} MiB, "
                                 "longer than any record dvqa writes: not an audit log; give the file --audit wrote.")
            complete = line.endswith(b"\n")
            yield number, line[:-1] if complete else line, complete


def _record(line: bytes) -> dict | None:
    """The record on a line, or None for anything that is not a JSON object (a torn write, or an edit)."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def verify(path: Path, key: bytes | None = None, expect_head: tuple[int, str] | None = None) -> ChainCheck:
    """Prove the chain; name the first record that breaks it.

    With `key` every record's HMAC is checked (compare_digest). With `expect_head` (records, hash) as
    kept elsewhere from `dvqa audit head`, the log must still hold that record with that line hash:
    records appended since are fine; a log cut short or rewritten up to there is not."""
    check = ChainCheck(keyed=key is not None)
    prev_line: bytes | None = None
    prev_seq = 0
    pending_torn: tuple[int, bytes] | None = None
    seen_record = False
    has_hmac = False
    complete_lines = 0
    for number, line, complete in _lines(path):
        if not complete:
            check.warnings.append(f"line {number} is torn ({len(line)} bytes without a newline): a write was "
                                  "interrupted; the records before it are checked")
            break
        complete_lines += 1
        record = _record(line)
        if record is None or "seq" not in record:
            if not seen_record and pending_torn is not None:
                break  # two lines in a row that are not records before any record: not an audit log
            pending_torn = (number, line)  # must be accounted for by the next record's torn_previous
            continue
        seen_record = True
        has_hmac |= "hmac" in record
        where = f"record {record.get('seq', '?')} (line {number})"
        expected_prev = _line_hash(prev_line) if prev_line is not None else GENESIS
        if pending_torn is not None:
            stated = record.get("torn_previous") or {}
            if stated != {"bytes": len(pending_torn[1]), "sha256": _line_hash(pending_torn[1])}:
                check.errors.append(f"{where}: line {pending_torn[0]} is not a record and no record accounts "
                                    "for it: the log was edited")
            else:
                check.warnings.append(f"line {pending_torn[0]}: {len(pending_torn[1])} bytes left by an "
                                      f"interrupted write, closed and accounted for by {where}")
            pending_torn = None
        if record.get("seq") != prev_seq + 1:
            check.errors.append(f"{where}: expected record {prev_seq + 1} here - records were deleted or "
                                "reordered")
        elif record.get("prev") != expected_prev:
            check.errors.append(f"{where}: does not follow record {prev_seq} - record {prev_seq} (line "
                                f"{number - 1}) was changed after it was written")
        if key is not None and not hmac.compare_digest(str(record.get("hmac", "")), _mac(record, key)):
            check.errors.append(f"{where}: HMAC does not match - this record was changed, or the key is wrong")
        if check.errors:
            break
        prev_line, prev_seq = line, record["seq"]
        check.records += 1
        if expect_head is not None and prev_seq == expect_head[0]:
            if not hmac.compare_digest(_line_hash(line), expect_head[1]):
                check.errors.append(f"{where}: is not the record {expect_head[0]} of the head you kept "
                                    f"({expect_head[1][:16]}...): the log was rewritten")
                break
            check.pinned = True
    if complete_lines and not seen_record:
        raise InputError(f"{path}: not an audit log (no line of it is a dvqa audit record); give the file "
                         "--audit wrote.")
    if pending_torn is not None and not check.errors:
        check.errors.append(f"line {pending_torn[0]}: the last complete line is not a record: the log was edited")
    if expect_head is not None and not check.errors and not check.pinned:
        check.errors.append(f"the log ends at record {check.records}, before record {expect_head[0]} of the head "
                            "you kept: records were cut off the end")
    if key is None and has_hmac:
        check.warnings.append("its records carry HMACs, but no --audit-key-env was given: they were not checked")
    if prev_line is not None:
        check.head = _line_hash(prev_line)
    return check


def record_hash(record: dict) -> str:
    """The SHA-256 of the line `append` wrote for `record`: the `prev` of the record after it, and the hash
    `dvqa audit head` prints while it is the last. Whoever keeps it can later show the log still holds that
    record unchanged."""
    return _line_hash(_canonical(record))


def find(path: Path, seqs: set[int]) -> dict[int, tuple[dict, str]]:
    """The records numbered `seqs`, each with the SHA-256 of its line as the log holds it now; the log is read
    up to the last one wanted, not further. A number the log does not hold is left out."""
    found: dict[int, tuple[dict, str]] = {}
    for _, line, complete in _lines(path):
        record = _record(line) if complete else None
        if record is not None and record.get("seq") in seqs:
            found[record["seq"]] = (record, _line_hash(line))
            if len(found) == len(seqs):
                break
    return found


def records(path: Path) -> list[dict]:
    """The complete records of a log (a torn or non-record line is left out)."""
    out = []
    for _, line, complete in _lines(path):
        record = _record(line) if complete else None
        if record is not None:
            out.append(record)
    return out


def file_facts(path: Path | None, digest: bool = True, known: tuple[int, str] | None = None
               ) -> dict[str, object] | None:
    """Path, size and SHA-256 of a file for a record. `known`: (size, SHA-256) its writer made of it just
    before it was placed, in a private folder nothing else writes to (`dvqa serve`'s spool), taken instead
    of reading the file again when the size still agrees."""
    if path is None:
        return None
    facts: dict[str, object] = {"path": absolute(path)}
    try:
        size = path.stat().st_size
        facts.update(size=size)
        if known is not None and known[0] == size:
            facts.update(sha256=known[1])
        elif digest:
            facts.update(sha256=sha256_file(path))
    except OSError as exc:
        facts["unreadable"] = exc.strerror
    return facts


def conversion_event(source: Path, output: Path, result=None, exit_code: int = 0, message: str = "",
                     input_facts: dict | None = None) -> dict:
    """What one `dvqa convert` attempt did, successful or not, for the audit trail.

    `input_facts`: the input as read, when it is not a file to hash afterwards (a stream on stdin, a
    file followed while it grew - hashed as it was read)."""
    # an interrupted attempt is recorded at once: the input's hash (seconds for a long video) is not taken
    event: dict[str, object] = {"command": "convert",
                                "input": input_facts or file_facts(source, digest=exit_code < 128)}
    if result is None:
        event.update(output={"path": absolute(output), "written": False}, outcome="failure",
                     exit_code=exit_code, message=message)
        return event
    r = result.to_dict()
    q = r["quality"]
    event.update(
        output={"path": absolute(r["output"]["path"]), "written": r["written"], "sha256": r["output"]["sha256"],
                "size": r["output"]["size"]},
        uids={"sop_class": r["output"]["sop_class_uid"], "sop_instance": r["output"]["sop_instance_uid"],
              "study_instance": r["output"]["study_instance_uid"],
              "series_instance": r["output"]["series_instance_uid"],
              "transfer_syntax": r["output"]["transfer_syntax_uid"]},
        patient=r["output"]["patient"],
        syntax=r["plan"]["syntax"], passthrough=r["passthrough"], encoder=r["encoder"],
        encoder_build=r["encoder_build"], elementary_stream_sha256=r["elementary_stream_sha256"],
        quality=({"ssim_definition": q["ssim_definition"]["name"], "frames": q["frames"],
                  **{f"{m}_{s}": q["summary"][m][s] for m in ("psnr_y", "ssim_y") for s in ("mean", "min")}}
                 if q else None),
        profile=r["profile"]["name"] if r["profile"] else None,
        findings=[{"code": f["code"], "severity": f["severity"]} for f in r["findings"]],
        validation={"layers": r["validation"]["layers"],
                    "errors": sum(1 for f in r["validation"]["findings"] if f["severity"] == "error"),
                    "warnings": sum(1 for f in r["validation"]["findings"] if f["severity"] == "warning"),
                    "codes": sorted({f["code"] for f in r["validation"]["findings"]})},
        signature_uid=r["signature"]["uid"] if r["signature"] else None,
        **({"partial": r["partial"]} if r.get("partial") else {}),
        outcome="success" if exit_code == 0 else "check failed", exit_code=exit_code, message=message,
    )
    return event

