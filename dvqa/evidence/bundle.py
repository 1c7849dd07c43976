"""`dvqa evidence build`: one folder with everything a regulatory submission needs about a set of
conversions, indexed, hashed and signed.

Every step runs on its own and is recorded whatever happens to it: a step that fails is in the
index as failed, with the reason, and the build goes on (the exit code then says 1). The folder is
built privately beside OUT and renamed into place only when complete, so OUT is either a whole
bundle or absent.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import av.logging

from dvqa import __version__
from dvqa.core.words import plural
from dvqa.core import outputs
from dvqa.core.errors import DvqaError, EnvironmentProblem, UsageError
from dvqa.core.findings import Severity
from dvqa.evidence import manifest
from dvqa.evidence.deidentified import Deidentification
from dvqa.evidence.deidentified import collect as collect_deidentified
from dvqa.evidence.inputs import Inputs, classify
from dvqa.trust.audit import AuditLog
from dvqa.trust.signature import Signer

PASSED, FAILED = "passed", "failed"
SOURCES = ".sources"  # --deidentify: links under neutral names to the recordings, removed before the manifest
# what stops a build: the disk under it cannot take the bundle (a permission error is a step's, e.g. an input's)
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})


@dataclass
class Step:
    name: str
    status: str = PASSED
    summary: str = ""
    files: list[str] = field(default_factory=list)  # relative to the bundle
    seconds: float = 0.0  # how long it took (bench/bench_evidence.py reads it)
    detail: str = ""  # a step that failed on an error dvqa did not expect: the exception, for a bug report


@dataclass
class Settings:
    inputs: list[Path]
    junit: list[Path] = field(default_factory=list)
    signer: Signer | None = None
    audit_key: bytes | None = None
    profile: str | None = None
    trust: list | None = None  # certificates DICOM signatures and the manifest must chain to
    deidentify: bool = False  # PS3.15 Basic Profile on collected files, no input's name in the bundle
    services: list[dict] = field(default_factory=list)  # the conformance statement's sections on dvqa serve


@dataclass
class Bundle:
    folder: Path
    steps: list[Step]
    manifest: dict
    notes: list[str] = field(default_factory=list)  # what was cleaned up before the build

    @property
    def ok(self) -> bool:
        return all(s.status == PASSED for s in self.steps)


def build(out: Path, settings: Settings, progress: Callable[[str], None] | None = None) -> Bundle:
    if os.path.lexists(out):
        raise UsageError(f"{out}: already exists; give a new folder for the bundle.")
    outputs.require_folder(out.parent)
    found = classify(settings.inputs)
    notes = outputs.sweep(out.parent)  # the private folders of builds that were killed (SIGKILL, power cut)
    if found.dicom and not settings.deidentify:
        notes.append(f"the bundle holds the {len(found.dicom)} collected DICOM file(s) as they are, patient data "
                     "included: keep it as you keep the files, or build it with --deidentify (PS3.15 Basic Profile)")
    d = Deidentification() if settings.deidentify else None
    stage = outputs.temp_dir(out.parent, out.name)
    try:
        steps = _run_steps(stage, settings, found, progress or (lambda _: None), d)
        shutil.rmtree(stage / SOURCES, ignore_errors=True)  # the links --deidentify converted through
        created = dt.datetime.now(dt.timezone.utc)
        _write_index(stage, steps, settings, created)
        written = manifest.write(stage, settings.signer, created, d.record() if d else None)
        os.rename(stage, out)  # same folder: atomic; a non-empty folder that appeared at OUT meanwhile makes it fail
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Bundle(out, steps, written, notes)


def _run_steps(stage: Path, s: Settings, found: Inputs, say: Callable[[str], None],
               d: Deidentification | None = None) -> list[Step]:
    recordings, dicom = found.recordings, found.dicom
    for sub in ("dicom", "conversions", "validation", "reports", "audit"):
        (stage / sub).mkdir()
    steps: list[Step] = []
    audit = AuditLog(stage / "audit" / "audit.jsonl", s.audit_key)
    names: set[str] = set()
    withheld: dict[str, str] = {}  # --deidentify: an input's own name -> its neutral one, in every finding
    if d is not None:  # no input's own name anywhere in the bundle: it is often the patient's
        (stage / SOURCES).mkdir()
        work = [(f"convert recording-{n:03d}", lambda n=n, path=path: _convert(
            stage, _neutral_link(stage, path, f"recording-{n:03d}"), s, audit, names))
            for n, path in enumerate(recordings, 1)]
        work += [(f"collect dicom-{n:03d}", lambda n=n, path=path: _collect_deidentified(
            stage, path, f"dicom-{n:03d}", s, d, names)) for n, path in enumerate(dicom, 1)]
        for kind, paths in (("recording", recordings), ("dicom", dicom)):
            for n, path in enumerate(paths, 1):
                for said in (str(path.resolve()), str(path), path.name):  # the longest first
                    withheld.setdefault(said, f"{kind}-{n:03d} (its name withheld)")
    else:
        work = [(f"convert {path.name}", lambda path=path: _convert(stage, path, s, audit, names))
                for path in recordings]
        work += [(f"collect {path.name}", lambda path=path: _collect(stage, path, names)) for path in dicom]
    work += [("validate", lambda: _validate(stage, s)),
             ("signatures", lambda: _signatures(stage, s, d)),
             ("audit trail", lambda: _audit(stage, audit, bool(recordings))),
             ("conformance statement", lambda: _conformance(stage, s.services)),
             ("licenses and SBOM", lambda: _licenses(stage)),
             ("traceability", lambda: _traceability(stage, s)),
             ("environment", lambda: _environment(stage))]
    for number, (name, run) in enumerate(work, 1):
        say(f"[{number}/{len(work)}] {name}")
        step, started, fault = Step(name), time.monotonic(), None
        try:
            step.status, step.summary, step.files = run()
        except Exception as exc:
            # A conversion that failed half-way is freed with `exc` (its traceback holds the decoders): their
            # FFmpeg threads log as they stop, and PyAV's log callback takes the GIL this thread holds while
            # it waits for them - a deadlock. FFmpeg's log is silenced before anything is released.
            av.logging.set_level(None)
            fault = _machine_fault(exc, stage.parent)
            step.status, step.summary, step.detail = FAILED, *_finding(exc, stage)
            for said, neutral in withheld.items():
                step.summary, step.detail = step.summary.replace(said, neutral), step.detail.replace(said, neutral)
        if fault is not None:  # raised here, not in the handler: see _machine_fault
            raise fault
        step.seconds = round(time.monotonic() - started, 3)
        steps.append(step)
        say(f"      {step.status}: {step.summary}")
    if found.unreadable:
        steps.append(Step("inputs not read", FAILED, _listed(found.unreadable, d is not None)))
    if found.skipped:
        steps.append(Step("inputs not used", PASSED, _listed(found.skipped, d is not None)))
    return steps


def _listed(entries: list[str], withhold: bool) -> str:
    """Inputs left out ("PATH: why"), or with --deidentify only how many and why: a name may be the patient's."""
    if not withhold:
        return "; ".join(entries)
    reasons = sorted({entry.split(": ", 1)[1] if ": " in entry else "left out" for entry in entries})
    return f"{len(entries)} input(s), names withheld: " + "; ".join(reasons)


def _finding(exc: Exception, stage: Path) -> tuple[str, str]:
    """What a failed step says in the index - one sentence, paths named as in the bundle (the private
    folder it was built in is gone by the time anyone reads it) - and, for an error dvqa did not expect,
    the exception itself, kept apart in index.json for a bug report rather than shown as the finding."""
    def bundled(text: str) -> str:
        for folder in (str(stage), str(stage.resolve())):
            text = text.replace(folder + os.sep, "")
        return text

    if isinstance(exc, DvqaError):
        return bundled(str(exc)), ""
    if isinstance(exc, OSError) and exc.strerror:
        where = bundled(str(exc.filename)) + ": " if exc.filename else ""
        return f"{where}{exc.strerror.lower()}; check the file and the folder, then build again.", ""
    return ("this step stopped on an error in dvqa, not in the inputs; index.json holds it as this step's "
            "detail: please report it."), bundled(f"{type(exc).__name__}: {exc}")


def _machine_fault(exc: BaseException, folder: Path) -> EnvironmentProblem | None:
    """A full disk (or quota, read-only file system, I/O error) under the bundle is the machine's fault,
    not a step's: the build stops with exit 4 and no bundle, rather than signing a bundle of steps that
    failed for want of space. The fault may be wrapped (convert says it in its own sentence), so the
    chain of causes is searched. The error returned holds no link to `exc`: its traceback keeps the
    conversion's FFmpeg objects alive until the interpreter exits, where freeing them can deadlock."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain is short; the bound only guards against a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in FULL:
            return EnvironmentProblem(f"{folder}: {outputs.machine_fault(seen)}; the evidence build stopped and "
                                      "left no bundle.")
        seen = seen.__cause__ or seen.__context__
    return None


def _unique(name: str, names: set[str]) -> str:
    stem, number = name, 2
    while name in names:
        name = f"{stem}-{number}"
        number += 1
    names.add(name)
    return name


def _convert(stage: Path, source: Path, s: Settings, audit: AuditLog, names: set[str]):
    from dvqa.convert.pipeline import ConvertOptions, convert
    from dvqa.quality import reports

    name = _unique(source.stem, names)
    output = stage / "dicom" / f"{name}.dcm"
    result = convert(source, output, ConvertOptions(profile=s.profile, signer=s.signer, audit=audit,
                                                    uid_seed=_seed(source, s)))
    record, files = result.to_dict(mapping=True), []
    for suffix in (".json", ".html"):
        report = stage / "conversions" / f"{name}{suffix}"
        reports.write(report, record, result.quality)
        files.append(report.relative_to(stage).as_posix())
    if result.written:
        files.insert(0, output.relative_to(stage).as_posix())
    psnr = ((record.get("quality") or {}).get("summary") or {}).get("psnr", {})
    exact = reports.bit_exact(record.get("quality"))
    said = (f"{result.plan.syntax.name}, {reports.plural(result.frames, 'frame')}"
            + (", bit-exact (every frame identical to its source)" if exact else
               f", PSNR mean {reports.number(psnr['mean'], 2)} dB, worst {reports.number(psnr['min'], 2)} dB"
               if psnr else "")
            + ("" if result.written else "; not written: a quality floor was not met"))
    return (PASSED if result.exit_code == 0 else FAILED), said, files


def _seed(source: Path, s: Settings) -> str:
    """What names a conversion exactly: the same seed converts the same bytes with the same software and
    options into the same object, so its UIDs may be derived from it (a rebuild gives the same UIDs)."""
    from dvqa.core.digest import sha256_file

    return f"dvqa {__version__}/FFmpeg {av.ffmpeg_version_info}/profile {s.profile}/{sha256_file(source)}"


def _collect(stage: Path, source: Path, names: set[str]):
    target = stage / "dicom" / f"{_unique(source.stem, names)}{source.suffix or '.dcm'}"
    with open(source, "rb") as reader, outputs.atomic_file(target) as writer:
        shutil.copyfileobj(reader, writer)
    return PASSED, f"copied from {source}", [target.relative_to(stage).as_posix()]


def _neutral_link(stage: Path, source: Path, name: str) -> Path:
    """`source` under a name that says nothing of it, so the conversion's records name that instead."""
    link = stage / SOURCES / f"{name}{source.suffix.lower()}"
    link.symlink_to(source.resolve())
    return link


def _collect_deidentified(stage: Path, source: Path, name: str, s: Settings, d: Deidentification,
                          names: set[str]):
    from dvqa.trust.verification import VerifyPolicy

    target = stage / "dicom" / f"{_unique(name, names)}.dcm"
    policy = VerifyPolicy(trust=tuple(s.trust) if s.trust is not None else None,
                          accept_unauthenticated=s.trust is None)
    said = collect_deidentified(source, target, stage, d, policy)
    return PASSED, said, [target.relative_to(stage).as_posix()]


def _dicom_files(stage: Path) -> list[Path]:
    return sorted((stage / "dicom").iterdir())


def _validate(stage: Path, s: Settings):
    from dvqa.core import profiles
    from dvqa.validate import formats
    from dvqa.validate.run import validate

    files = _dicom_files(stage)
    if not files:
        return FAILED, "no DICOM file to validate: no input was converted or collected", []
    results = validate(files, profiles.load(s.profile) if s.profile else None)
    for r in results:  # paths in the bundle, not in the folder it was built in
        r.path = Path(r.path).relative_to(stage).as_posix()
    written = []
    for suffix, render in ((".json", formats.as_json), (".xml", formats.junit), (".sarif", formats.sarif)):
        target = stage / "validation" / f"validation{suffix}"
        outputs.write_atomic(target, render(results, Severity.ERROR))
        written.append(target.relative_to(stage).as_posix())
    errors = sum(1 for r in results for f in r.findings if f.severity is Severity.ERROR)
    warnings = sum(1 for r in results for f in r.findings if f.severity is Severity.WARNING)
    failed = sum(1 for r in results if any(f.severity is Severity.ERROR for f in r.findings))
    said = (f"{plural(len(results), 'file')}, {failed} failed; {plural(errors, 'error')}, "
            f"{plural(warnings, 'warning')}")
    return (FAILED if errors else PASSED), said, written


def _signatures(stage: Path, s: Settings, d: Deidentification | None = None):
    from dvqa.trust.verification import VerifyPolicy, verify_file

    # without --trust the signers cannot be authenticated: the step says so rather than failing every file
    policy = VerifyPolicy(trust=tuple(s.trust) if s.trust is not None else None,
                          accept_unauthenticated=s.trust is None)
    rows, bad, unsigned = [], 0, 0
    for path in _dicom_files(stage):
        name = path.relative_to(stage).as_posix()
        before = (d.signatures_before.get(name) if d else None) or []
        found = [v.to_dict() for v in verify_file(path, policy=policy)] if not before else []
        unsigned += not (found or before)
        bad += any(not v["ok"] for v in found + before)
        rows.append({"file": name, "signatures": found,
                     **({"signatures_of_the_original_before_deidentification": before} if before else {})})
    target = stage / "validation" / "signatures.json"
    outputs.write_atomic(target, json.dumps({"trust_given": s.trust is not None, "files": rows}, indent=1) + "\n")
    said = (f"{len(rows) - unsigned} signed files, {bad} failed verification, {unsigned} unsigned"
            + ("" if s.trust is not None else "; signers NOT authenticated (no --trust)"))
    return (FAILED if bad else PASSED), said, [target.relative_to(stage).as_posix()]


def _audit(stage: Path, audit: AuditLog, converted: bool):
    from dvqa.trust.audit import verify

    if not converted:
        return PASSED, "no conversion in this bundle, so no audit records", []
    check = verify(audit.path, audit.key)
    target = stage / "audit" / "audit-verification.json"
    outputs.write_atomic(target, json.dumps(check.to_dict(), indent=1) + "\n")
    said = (f"{check.records} records, chain intact" + ("" if audit.key else " (no HMAC key: --audit-key-env)")
            if check.ok else "; ".join(check.errors))
    return (PASSED if check.ok else FAILED), said, [audit.path.relative_to(stage).as_posix(),
                                                    target.relative_to(stage).as_posix()]


def _conformance(stage: Path, services: list[dict]):
    from dvqa.report import conformance, documents, markdown

    doc = conformance.statement(services)
    files = _document(stage, "conformance-statement", doc, markdown.document(doc), documents.document_html(doc))
    return PASSED, "DICOM Conformance Statement of this installation (PS3.2 layout)", files


def _licenses(stage: Path):
    from dvqa.report import documents, licenses, markdown, native, sbom

    record = licenses.report(native.bundled())
    files = _document(stage, "licenses", record, markdown.licenses(record), documents.licenses_html(record))
    target = stage / "reports" / "sbom.cdx.json"
    outputs.write_atomic(target, sbom.bom(record))
    f = record["ffmpeg"]
    said = f"FFmpeg {f['version']}: {f['verdict']}" + ("" if f["redistributable"] else " (not redistributable)")
    return (PASSED if f["redistributable"] else FAILED), said, files + [target.relative_to(stage).as_posix()]


def _traceability(stage: Path, s: Settings):
    from dvqa.report import documents, markdown, traceability

    if not s.junit:
        return FAILED, "no test results given: run the tests with --junitxml and pass the file with --junit", []
    path = traceability.default_requirements()
    results = [r for file in s.junit for r in traceability.load_junit(file)]
    record = traceability.matrix(traceability.load_requirements(path), results, s.junit, path)
    doc = traceability.document(record)
    files = _document(stage, "traceability", record, markdown.document(doc), documents.document_html(doc))
    summary = record["summary"]
    said = (f"{summary['verified']} requirements verified, {summary['failed']} failed, "
            f"{summary['unverified']} unverified")
    return (PASSED if summary["failed"] == summary["unverified"] == 0 else FAILED), said, files


def _document(stage: Path, name: str, record: dict, md: str, html: str) -> list[str]:
    from dvqa.report import documents

    written = []
    for suffix, data in ((".json", json.dumps(record, indent=1) + "\n"), (".md", md), (".html", html),
                         (".pdf", documents.pdf(html))):
        target = stage / "reports" / f"{name}{suffix}"
        outputs.write_atomic(target, data)
        written.append(target.relative_to(stage).as_posix())
    return written


def environment() -> dict:
    """What produced the bundle: enough to rebuild the same environment."""
    from dvqa.report import licenses

    return {
        "dvqa": __version__, "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "os": platform.platform(), "machine": platform.machine(),
        "ffmpeg": av.ffmpeg_version_info, "pyav": av.__version__,
        "packages": {p["name"]: p["version"] for p in licenses.python_packages()},
    }


def _environment(stage: Path):
    target = stage / "environment.json"
    record = environment()
    outputs.write_atomic(target, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return PASSED, f"dvqa {record['dvqa']}, Python {record['python']}, FFmpeg {record['ffmpeg']}, {record['os']}", \
        [target.name]


def _write_index(stage: Path, steps: list[Step], s: Settings, created: dt.datetime) -> None:
    from dvqa.report import documents

    failed = [step.name for step in steps if step.status == FAILED]
    verdict = (f"{len(failed)} of {plural(len(steps), 'step')} failed: {', '.join(failed)}" if failed
               else "the one step passed" if len(steps) == 1 else f"all {len(steps)} steps passed")
    page = documents.html("evidence.html", steps=steps, verdict=verdict, ok=not failed, version=__version__,
                          built_in=str(stage),
                          created=created.isoformat(timespec="seconds"), inputs=_inputs(s),
                          signer=s.signer.certificate.subject.rfc4514_string() if s.signer else "")
    outputs.write_atomic(stage / "index.html", page)
    outputs.write_atomic(stage / "index.pdf", documents.pdf(page))
    outputs.write_atomic(stage / "index.json", json.dumps({
        "dvqa_version": __version__, "created_utc": created.isoformat(timespec="seconds"), "verdict": verdict,
        "built_in": str(stage), "inputs": _inputs(s),
        "steps": [step.__dict__ for step in steps]}, indent=1) + "\n")


def _inputs(s: Settings) -> list[str]:
    return (["(withheld: the bundle was built with --deidentify, and file names often name the patient)"]
            if s.deidentify else [str(p) for p in s.inputs])
