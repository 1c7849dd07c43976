"""`dvqa batch convert`: a manifest of conversions, here or on a Dask cluster, with one audit chain.

Each row is one task. The worker converts into a staged file beside the output - a hidden name
that carries this client's process id, so a leftover is swept once the client is gone
(dvqa.core.outputs.sweep) - and returns the audit record it would have written. The client alone
touches the audit log: for each finished task it renames the staged file onto the output and
appends the record as one step (outputs.commit), in completion order. So an output never exists
without its record, a cluster run's log verifies like a local one, and a worker that dies leaves
nothing at any output path.

A worker that dies mid-task: Dask's scheduler runs the task again on another worker (up to its
`allowed-failures`). Every attempt announces itself as it starts (a Dask event), so the client
records each attempt that ended without a result, naming the worker. A bad input is the input's
fault: the task returns the failure, which is recorded once and not retried. An environment
problem on one worker (a full disk) raises, so Dask retries it elsewhere (RETRIES).

When no worker remains for --worker-timeout, or the scheduler is lost, the client stops: every
row not finished is recorded as failed (exit 4), and a lost attempt's record says the run stopped,
not that Dask ran it again. A worker that finishes a task nobody will collect removes its staged
file; the client sweeps its folders of dead workers' work when the batch ends.
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dvqa.convert.manifest import AboutTheLog, Row
from dvqa.convert.pipeline import convert
from dvqa.core import outputs, signals
from dvqa.core.cluster import Cluster, ClusterLost, client, completed, require_absolute
from dvqa.core.digest import sha256_file
from dvqa.core.errors import DvqaError, EnvironmentProblem, ExitCode, InputError, UsageError
from dvqa.core.findings import Severity
from dvqa.trust import audit as audit_trail
from dvqa.trust.audit import AuditLog, AuditWriteFailed, conversion_event
from dvqa.trust.signature import Signer, sign_file
from dvqa.validate.run import check_file

TOPIC = "dvqa-batch"  # the Dask event topic on which attempts announce themselves
RETRIES = 2  # re-runs of a task that raised (an environment problem on its worker)
ATTEMPT_BYTES = 6
STAGED_TAIL = "0" * 2 * ATTEMPT_BYTES + ".dcm"  # a staged file is stage_prefix(output) + attempt id + .dcm


@dataclass
class Outcome:
    """What a task sends back to the client."""

    index: int
    attempt: str
    worker: str
    exit_code: int
    message: str
    event: dict  # the audit record's content, for the client to append
    staged: str | None = None  # the converted file, to be renamed onto the row's output
    summary: dict = field(default_factory=dict)


@dataclass
class RowResult:
    line: int
    source: str
    output: str
    status: str  # converted | not written | failed | skipped | interrupted
    exit_code: int
    message: str = ""
    attempts: int = 0
    worker: str = ""
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class BatchResult:
    manifest: str
    rows: list[RowResult]
    elapsed_s: float = 0.0
    interrupted: KeyboardInterrupt | None = None

    @property
    def exit_code(self) -> int:
        """The most serious row's exit code (4 > 3 > 2 > 1 > 0), or the signal's when interrupted."""
        if self.interrupted is not None:
            return signals.exit_code_of(self.interrupted)
        return max((r.exit_code for r in self.rows), default=0)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, object]:
        return {"command": "batch convert", "manifest": self.manifest, "exit_code": self.exit_code,
                "elapsed_s": round(self.elapsed_s, 3), "counts": self.counts(),
                "interrupted": getattr(self.interrupted, "name", "SIGINT") if self.interrupted else None,
                "rows": [r.to_dict() for r in self.rows]}


def _worker():
    """The Dask worker this code runs in, or None in the client's own process."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _here() -> str:
    """The worker running this attempt, as the audit record names it."""
    worker = _worker()
    where = worker.address if worker is not None else "this process"
    return f"{where} (pid {os.getpid()} on {socket.gethostname()})"


def _announce(batch: str, index: int, attempt: str, state: str, message: str = "") -> None:
    worker = _worker()
    if worker is not None:  # in the client's own process there is no one to tell: it knows what it runs
        worker.log_event(TOPIC, {"batch": batch, "index": index, "attempt": attempt, "state": state,
                                 "where": _here(), "pid": os.getpid(), "message": message})


def convert_row(batch: str, index: int, row: Row, stage_prefix: str) -> Outcome:
    """Run on a worker: convert one row into a staged file; never touch the audit log or the output."""
    attempt = secrets.token_hex(ATTEMPT_BYTES)
    _announce(batch, index, attempt, "started")
    staged = row.output.parent / f"{stage_prefix}{attempt}.dcm"
    try:
        outcome = _convert_staged(index, attempt, row, staged)
    except EnvironmentProblem as exc:  # this worker's disk or folder: another worker may succeed
        _announce(batch, index, attempt, "failed", str(exc).replace(str(staged), str(row.output)))
        raise
    if outcome.staged and _abandoned():  # no client will place it: patient data must not stay behind, hidden
        Path(outcome.staged).unlink(missing_ok=True)
        outcome.staged = None
    outcome.worker = _here()
    return outcome


def _abandoned() -> bool:
    """Nobody will collect this task's result: the worker lost its scheduler (it is closing), or the client
    that submitted the task is gone (the worker has cancelled it). The task itself runs on regardless."""
    worker = _worker()
    if worker is None:
        return False
    from distributed.worker import thread_state

    key = getattr(thread_state, "key", None)
    task = worker.state.tasks.get(key) if key is not None else None
    cancelled = key is not None and (task is None or task.state == "cancelled")
    return cancelled or worker.status.name not in ("running", "paused")


def _convert_staged(index: int, attempt: str, row: Row, staged: Path) -> Outcome:
    """Convert one row to `staged`; the outcome, or EnvironmentProblem."""
    options = replace(row.options, audit=None, signer=None, force=False)
    try:
        result = convert(row.source, staged, options)
    except EnvironmentProblem:
        raise
    except DvqaError as exc:  # the input's fault: the same on any worker, so reported, not retried
        message = str(exc).replace(str(staged), str(row.output))
        return Outcome(index, attempt, "", int(exc.exit_code), message,
                       conversion_event(row.source, row.output, None, int(exc.exit_code), message))
    result.output = row.output
    message = "; ".join(f.message for f in result.findings)
    event = conversion_event(row.source, row.output, result, int(result.exit_code), message)
    quality = event.get("quality") or {}
    summary = {"syntax": result.plan.syntax.name, "passthrough": result.plan.passthrough, "frames": result.frames,
               "size": result.output_size, "sha256": result.output_sha256, "elapsed_s": round(result.elapsed_s, 3),
               "psnr_y_min": quality.get("psnr_y_min"), "ssim_y_min": quality.get("ssim_y_min")}
    return Outcome(index, attempt, "", int(result.exit_code), message, event,
                   str(staged) if result.written else None, summary)


def run(manifest: Path, rows: list[Row], scheduler: str | Cluster | None = None, jobs: int = 1,
        audit: AuditLog | None = None, resume: bool = False, force: bool = False, signer: Signer | None = None,
        signature_profile: str = "base", on_row: Callable[[RowResult], None] | None = None) -> BatchResult:
    """Convert every row; one RowResult per row, in manifest order. Interruption is returned, not raised.

    With `signer`, the client signs each staged file before it is placed (the key never leaves this process).
    """
    started = time.monotonic()
    for folder in sorted({row.output.parent for row in rows}):
        outputs.sweep(folder)  # what an earlier client killed outright left staged (this host's leftovers)
    results: list[RowResult | None] = [None] * len(rows)
    todo = _plan(rows, audit, resume, force, results, on_row)
    run_state = _Run(manifest, rows, audit, force, signer, signature_profile, results, on_row)
    try:
        if scheduler is None and jobs <= 1:
            run_state.in_process(todo)
        else:
            run_state.on_cluster(scheduler or f"local:{jobs}", todo)
    except KeyboardInterrupt as exc:
        run_state.record_interrupted(exc)
        return BatchResult(str(manifest), [r for r in results if r is not None], time.monotonic() - started, exc)
    finally:
        _discard_staged([row.output for row in rows])
        for folder in sorted({row.output.parent for row in rows}):
            outputs.sweep(folder)  # work folders of workers killed during this run whose task ran nowhere else
    return BatchResult(str(manifest), [r for r in results if r is not None], time.monotonic() - started)


def _plan(rows: list[Row], audit: AuditLog | None, resume: bool, force: bool, results: list,
          on_row: Callable[[RowResult], None] | None) -> list[int]:
    """The rows to convert. With `resume`, a row whose output exists and is the file its audit record
    describes (same output and input SHA-256, and the same row: its digest, so a PatientID or option
    corrected in the manifest since is not skipped) is skipped; any other existing output stops the
    batch before it starts, unless `force` (a changed row is refused rather than silently redone: the
    output in place was made for the old row, and replacing a file is what --force is for)."""
    if resume and audit is None:
        raise UsageError("--resume needs --audit: the audit log is what proves an existing output is complete.")
    if resume and audit is not None and audit.key is None:  # an unkeyed log is rewritten by anyone who can write it
        raise UsageError(f"--resume trusts {audit.path} to skip rows, so it needs a keyed log: give --audit-key-env "
                         "VAR (the key the batch was run with); without a key anyone who can write the log can "
                         "forge the record that skips a row.")
    converted = _converted(audit) if resume and audit and audit.path.exists() else {}
    todo = []
    for index, row in enumerate(rows):
        if not os.path.lexists(row.output):
            todo.append(index)
            continue
        record = converted.get(audit_trail.absolute(row.output)) if resume else None
        changed = record is not None and (record.get("batch") or {}).get("row_sha256") != row.digest
        if record is not None and not changed and _still_valid(record, row):
            results[index] = RowResult(
                row.line, str(row.source), str(row.output), "skipped", int(record.get("exit_code", 0)),
                f"already converted: {row.output} matches audit record {record['seq']} (output and input SHA-256)")
            if on_row:
                on_row(results[index])
            continue
        if not force:
            why = _not_skipped(record, row, audit) if resume else "it already exists"
            raise UsageError(f"line {row.line}: {row.output}: {why}; remove it, pass --force to convert the row "
                             "again" + ("" if resume else ", or --resume with the batch's --audit log to skip it")
                             + ". Nothing was converted.")
        todo.append(index)
    return todo


def _not_skipped(record: dict | None, row: Row, audit: AuditLog | None) -> str:
    """Why --resume does not skip an existing output, in words."""
    recorded = (record.get("batch") or {}).get("row_sha256", "") if record is not None else ""
    if record is not None and not recorded:
        return f"audit record {record['seq']} has no row digest (an older dvqa wrote it), so nothing shows the row " \
               "is unchanged"
    if record is not None and recorded != row.digest:
        return (f"the row differs from the one audit record {record['seq']} converted (a cell, an option or its "
                "metadata changed since), so the file there was made for the old row")
    return (f"no record in {audit.path if audit else 'the audit log'} matches it (changed since, or not made by a "
            "batch with this log)")


class UnverifiedLog(AboutTheLog, InputError):
    """--resume on a log that does not verify: refused, and not recorded in that log."""


def _converted(audit: AuditLog) -> dict[str, dict]:
    """output path -> the latest record of a conversion that wrote it, from a log that verifies."""
    check = audit_trail.verify(audit.path, audit.key)
    if not check.ok:
        raise UnverifiedLog(f"{audit.path}: the audit log does not verify ({check.errors[0]}); --resume trusts "
                            "only an intact log - see dvqa audit verify.")
    latest: dict[str, dict] = {}
    for record in audit_trail.records(audit.path):
        output = record.get("output") or {}
        if record.get("command") == "convert" and output.get("written") and output.get("sha256"):
            latest[output["path"]] = record
    return latest


def _still_valid(record: dict, row: Row) -> bool:
    try:
        return (sha256_file(row.output) == record["output"]["sha256"]
                and sha256_file(row.source) == (record.get("input") or {}).get("sha256"))
    except OSError:
        return False


def _discard_staged(targets: list[Path]) -> None:
    """Remove what workers staged for `targets` and was never placed (each folder read once)."""
    prefixes: dict[Path, set[str]] = {}
    for target in targets:
        prefixes.setdefault(target.parent, set()).add(outputs.stage_prefix(target))
    for folder, names in prefixes.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name[:-len(STAGED_TAIL)] in names:
                Path(entry.path).unlink(missing_ok=True)


class _Run:
    """The client's side: commits each finished row and appends its records, in completion order."""

    def __init__(self, manifest: Path, rows: list[Row], audit: AuditLog | None, force: bool, signer: Signer | None,
                 signature_profile: str, results: list, on_row: Callable[[RowResult], None] | None) -> None:
        self.manifest, self.rows, self.audit, self.force = manifest, rows, audit, force
        self.signer, self.signature_profile = signer, signature_profile
        self.results, self.on_row = results, on_row
        self.batch = secrets.token_hex(8)
        self.attempts: dict[int, dict[str, dict]] = {}  # row -> attempt id -> its announcements
        self.lock = threading.Lock()
        self.current: int | None = None  # the row converting in this process (in_process)

    def in_process(self, todo: list[int]) -> None:
        for index in todo:
            self.current = index
            row = self.rows[index]
            try:
                outcome = convert_row(self.batch, index, row, outputs.stage_prefix(row.output))
            except EnvironmentProblem as exc:
                self.finish_failed(index, int(exc.exit_code), str(exc))
                continue
            self.finish(outcome)
        self.current = None

    def on_cluster(self, scheduler: str | Cluster, todo: list[int]) -> None:
        require_absolute(scheduler, [p for i in todo for p in (self.rows[i].source, self.rows[i].output)])
        with client(scheduler) as connected:
            connected.subscribe_topic(TOPIC, self.heard)
            futures = {connected.submit(convert_row, self.batch, index, self.rows[index],
                                        outputs.stage_prefix(self.rows[index].output),
                                        key=f"dvqa-batch-{self.batch}-{index}", pure=False, retries=RETRIES): index
                       for index in todo}
            try:
                for future in completed(connected, futures, scheduler):
                    self.collect(futures[future], future)
            except ClusterLost as exc:  # the rows not finished are recorded as failed, then the batch stops
                left = [index for index in todo if self.results[index] is None]
                for index in left:
                    self.finish_failed(index, int(ExitCode.ENVIRONMENT), f"the row was not converted: {exc}",
                                       stopped=str(exc))
                raise ClusterLost(f"{str(exc).rstrip('.')}, then run the batch again with --resume ({len(left)} "
                                  "row(s) not converted, each recorded as failed).") from None

    def collect(self, index: int, future) -> None:
        """One finished task: its row placed and recorded, or recorded as failed."""
        try:
            outcome = future.result()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # retries used up, or Dask's KilledWorker
            self.finish_failed(index, int(ExitCode.ENVIRONMENT), _task_failure(exc))
            return
        self.finish(outcome)

    def heard(self, event: tuple[float, dict]) -> None:
        """A Dask event from a worker (called on the client's event-loop thread)."""
        message = event[1]
        if message.get("batch") != self.batch:
            return
        with self.lock:
            self.attempts.setdefault(message["index"], {}).setdefault(message["attempt"], {}).update(
                {message["state"]: message})

    def lost_attempts(self, index: int, done: str | None) -> list[dict]:
        """Attempts of row `index` that started but gave no result (the worker died, or it failed there)."""
        with self.lock:
            seen = dict(self.attempts.get(index, {}))
        return [states for attempt, states in seen.items() if attempt != done and "started" in states]

    def record(self, event: dict) -> None:
        if self.audit is not None:
            self.audit.append(event)

    def batch_fields(self, row: Row, attempt: int, where: str) -> dict:
        return {"batch": {"manifest": audit_trail.absolute(self.manifest), "line": row.line, "attempt": attempt,
                          "worker": where, "row_sha256": row.digest}}

    def record_lost(self, index: int, done: str | None, stopped: str | None = None) -> int:
        """One record per attempt that ended without a result; returns how many there were. `stopped`: why the
        client stopped waiting (the cluster was lost), when that, not a worker's death, is all it knows."""
        row = self.rows[index]
        lost = self.lost_attempts(index, done)
        for number, states in enumerate(lost, 1):
            where = states["started"]["where"]
            reason = (states["failed"]["message"] if "failed" in states else
                      f"the run stopped before its result came back ({stopped})" if stopped else
                      "the worker stopped during the conversion (its process died or was killed)")
            again = "Dask ran the task again" if done is not None or number < len(lost) else "it did not run again"
            message = f"attempt {number} on worker {where} gave no result: {reason}; {again}"
            self.record({**conversion_event(row.source, row.output, None, int(ExitCode.ENVIRONMENT), message),
                         **self.batch_fields(row, number, where)})
        return len(lost)

    def finish(self, outcome: Outcome) -> None:
        index, row = outcome.index, self.rows[outcome.index]
        attempt = self.record_lost(index, outcome.attempt) + 1
        if outcome.staged and not _ours(Path(outcome.staged), row):
            self.finish_failed(index, int(ExitCode.ENVIRONMENT), f"worker {outcome.worker} returned {outcome.staged}, "
                               "which is not the file staged for this row; nothing was placed or signed (every "
                               "cluster member must be trusted: check that worker)", attempt, outcome.worker)
            return
        event = {**outcome.event, **self.batch_fields(row, attempt, outcome.worker)}
        status = "converted" if outcome.staged else ("not written" if outcome.exit_code == 1 else "failed")
        result = RowResult(row.line, str(row.source), str(row.output), status, outcome.exit_code, outcome.message,
                           attempt, outcome.worker, outcome.summary)
        try:
            if outcome.staged and self.signer:
                self.sign(Path(outcome.staged), event, result)
            if outcome.staged:
                outputs.commit(Path(outcome.staged), row.output, self.force, lambda: self.record(event))
            else:
                with signals.deferred():
                    self.record(event)
        except signals.Interrupted as exc:
            if exc.held:  # the signal came during the commit, which completed
                self.done(index, result)
            raise
        except AuditWriteFailed:
            raise  # the log takes no record: the batch stops (commit has taken the output back)
        except DvqaError as exc:  # a file put at the output meanwhile, a signature that failed
            if outcome.staged:
                Path(outcome.staged).unlink(missing_ok=True)
            self.finish_failed(index, int(exc.exit_code), str(exc), attempt, outcome.worker)
            return
        self.done(index, result)

    def sign(self, staged: Path, event: dict, result: RowResult) -> None:
        assert self.signer is not None
        signed = sign_validated(staged, result.output, event, self.signer, self.signature_profile)
        result.summary = {**result.summary, **signed}

    def finish_failed(self, index: int, code: int, message: str, attempt: int | None = None, where: str = "",
                      stopped: str | None = None) -> None:
        row = self.rows[index]
        if attempt is None:
            lost = self.record_lost(index, None, stopped)
            attempt = max(1, lost)
            message = f"{message} (after {lost} attempts, each recorded)" if lost > 1 else message
        self.record({**conversion_event(row.source, row.output, None, code, message),
                     **self.batch_fields(row, attempt, where)})
        self.done(index, RowResult(row.line, str(row.source), str(row.output), "failed", code, message, attempt, where))

    def done(self, index: int, result: RowResult) -> None:
        self.results[index] = result
        if self.on_row:
            self.on_row(result)

    def record_interrupted(self, exc: KeyboardInterrupt) -> None:
        """Every attempt under way when the client was stopped gets its record, as `dvqa convert` gives one."""
        name = getattr(exc, "name", "SIGINT")
        running = [self.current] if self.current is not None else []
        with self.lock:
            running += [i for i, attempts in self.attempts.items()
                        if any("started" in s for s in attempts.values()) and i not in running]
        for index in sorted(set(running)):
            if self.results[index] is not None:
                continue
            row = self.rows[index]
            message = f"interrupted by {name}; nothing was written - run the manifest again with --resume"
            try:
                self.record({**conversion_event(row.source, row.output, None, signals.exit_code_of(exc), message),
                             **self.batch_fields(row, 0, "")})
            except EnvironmentProblem:
                pass  # the log itself fails; the interruption is still reported on stderr
            self.results[index] = RowResult(row.line, str(row.source), str(row.output), "interrupted",
                                            signals.exit_code_of(exc), message)


def sign_validated(staged: Path, shown: str | Path, event: dict, signer: Signer, profile: str) -> dict:
    """Sign a file a worker made, here, so the private key never travels to a worker; its audit `event` is made
    to name the signed file. Only what this process has validated itself is signed: a worker's word that the
    file is valid is not enough. Returns the signed file's sha256, size and signature_uid."""
    errors = [f for f in check_file(staged).findings if f.severity == Severity.ERROR]
    if errors:
        raise DvqaError(f"{shown}: the file the worker made does not validate ({errors[0].message}); it "
                        "was not signed or placed.", ExitCode.CHECK_FAILED)
    signed = sign_file(staged, staged, signer, profile)
    digest, size = sha256_file(staged), staged.stat().st_size
    event["output"] = {**event["output"], "sha256": digest, "size": size}
    event["signature_uid"] = signed.uid
    return {"sha256": digest, "size": size, "signature_uid": signed.uid}


def _ours(staged: Path, row: Row) -> bool:
    """A worker's result names the file it staged: the client places (and signs) only a regular file at the name
    it gave this row - never a path a misbehaving worker chose (the client would move or sign any file)."""
    prefix = outputs.stage_prefix(row.output)
    if (staged.parent != row.output.parent or not staged.name.startswith(prefix)
            or len(staged.name) != len(prefix) + len(STAGED_TAIL)):
        return False
    try:
        return stat.S_ISREG(os.lstat(staged).st_mode)
    except OSError:
        return False


def _task_failure(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return ("the worker running this row died on every attempt Dask allowed (its allowed-failures); the input "
                "may crash or exhaust a worker - convert it alone with dvqa convert --debug")
    return str(exc) if isinstance(exc, DvqaError) else f"{type(exc).__name__}: {exc}"
