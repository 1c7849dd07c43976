"""What recording ingestion is configured with: the `record:` mapping of `dvqa serve`'s config file.

Every key is optional except the tokens; without tokens the recording API answers 503 (nobody could be
allowed in, so nothing is accepted)::

    record:
      tokens_sha256: [9f86d08...]          # SHA-256 (hex) of each bearer token: `printf %s "$TOKEN" | sha256sum`
      spool_dir: /var/lib/dvqa/recordings  # private (0700): chunks, state, and DICOM files the PACS did not take
      recorder_origin: https://app.example.org   # the web page's origin: CORS for it (and only it)
      max_chunk_mb: 16                     # one PUT's body
      max_recording_mb: 4096               # a whole recording
      max_recordings: 4                    # recordings being uploaded at once (more: 429)
      conversions: 2                       # conversions running at once (processes)
      idle_expiry_s: 600                   # no chunk for this long: abandoned, its spool removed
      keep_stored: false                   # keep the DICOM file after the PACS stored it
      retention_days: null                 # finished recordings' results, reports and stored copies: removed
                                           # this long after they finished (null: kept until the site removes them)
      iod: endoscopic                      # the same choices as `dvqa convert`
      syntax: auto
      passthrough: true
      quality: true
      ssim: fast
      profile: null                        # rules profile whose quality floors must be met
      uid_root: null
      sign_key: /etc/dvqa/signer.key       # with sign_cert: every DICOM is signed (PS3.15 Annex C)
      sign_cert: /etc/dvqa/signer.crt
      signature_profile: base
      passphrase_env: null
      audit: /var/lib/dvqa/audit.jsonl     # the server's audit chain
      audit_key_env: DVQA_AUDIT_KEY
      scheduler: tls://dask.example.org:8786   # convert ended recordings on a Dask cluster (dvqa.serve.remote)
      # scheduler: {address: tls://..., ca: /etc/dvqa/dask-ca.pem, cert: /etc/dvqa/dask-client.pem, key: null,
      #             allow_clear_text: false, require_tls: false, worker_timeout_s: 60}   (or local:N)
      pacs:                                # where finished recordings go; none: kept in spool_dir/dicom
        host: pacs.example.org             # DIMSE C-STORE ...
        port: 104
        called_aet: PACS
        calling_aet: DVQA
        fallback: h264-high-4.1            # a copy in this syntax when the PACS refuses the original (DIMSE)
        stow: https://pacs.example.org/dicom-web   # ... or DICOMweb STOW-RS instead
        retries: 3
        timeout: 30
        tls_ca: /etc/dvqa/pacs-ca.pem      # DIMSE over TLS (PS3.15 B.1) / the https STOW server's CA
        tls_cert: null
        tls_key: null

Tokens are kept only as SHA-256 digests: they are random secrets of at least 128 bits made for this use
(`openssl rand -hex 32`), so a digest cannot be reversed by guessing, and the config file (often readable
by administrators and in configuration management) gives nobody a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from dvqa.core.cluster import Cluster, parse, require_absolute
from dvqa.core.errors import UsageError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_spool_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dvqa" / "recordings"


@dataclass(frozen=True)
class PacsTarget:
    """The PACS finished recordings are stored to: DIMSE (host, port) or STOW-RS (stow)."""

    host: str = ""
    port: int | None = None
    called_aet: str = "ANY-SCP"
    calling_aet: str = "DVQA"
    stow: str = ""
    fallback: str | None = None
    retries: int = 3
    timeout: float = 30.0
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def describe(self) -> str:
        return self.stow or f"{self.called_aet}@{self.host}:{self.port}"

    def checked(self) -> "PacsTarget":
        if self.stow and self.port is not None:
            raise UsageError("record.pacs: give host and port (DIMSE C-STORE) or stow (a DICOMweb root), not both.")
        if not self.stow and self.port is None:
            raise UsageError("record.pacs: give host and port (DIMSE C-STORE) or stow (a DICOMweb root).")
        if self.stow and not self.stow.startswith(("http://", "https://")):
            raise UsageError(f"record.pacs.stow {self.stow}: give an http(s):// DICOMweb root.")
        if self.stow and self.fallback:
            raise UsageError("record.pacs.fallback works with DIMSE C-STORE (host, port), not with stow.")
        if self.port is not None and (not self.host or not 0 < int(self.port) < 65536):
            raise UsageError("record.pacs: give the PACS's host and a port of 1-65535.")
        if self.fallback:
            from dvqa.dicom import syntaxes

            if self.fallback not in syntaxes.writable_names():
                raise UsageError(f"record.pacs.fallback {self.fallback}: use one of "
                                 f"{', '.join(syntaxes.writable_names())}.")
        if not 0 <= self.retries <= 20 or self.timeout <= 0:
            raise UsageError("record.pacs: retries must be 0-20 and timeout positive.")
        for path in (self.tls_ca, self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"record.pacs: {path}: no such file; give the PEM file.")
        return self


@dataclass(frozen=True)
class RecordSettings:
    tokens_sha256: tuple[str, ...] = ()
    spool_dir: Path | None = None
    recorder_origin: str = ""
    max_chunk_mb: float = 16.0
    max_recording_mb: float = 4096.0
    max_recordings: int = 4
    conversions: int = 2
    idle_expiry_s: float = 600.0
    keep_stored: bool = False
    retention_days: float | None = None
    iod: str = "endoscopic"
    syntax: str = "auto"
    passthrough: bool = True
    quality: bool = True
    ssim: str = "fast"
    profile: str | None = None
    uid_root: str | None = None
    sign_key: Path | None = None
    sign_cert: Path | None = None
    signature_profile: str = "base"
    passphrase_env: str | None = None
    audit: Path | None = None
    audit_key_env: str | None = None
    pacs: PacsTarget | None = field(default=None)
    scheduler: Cluster | None = None  # `dvqa serve --scheduler`: where ended recordings are converted

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_sha256)

    @property
    def retention_s(self) -> float | None:
        return None if self.retention_days is None else self.retention_days * 86400

    @property
    def max_chunk_bytes(self) -> int:
        return int(self.max_chunk_mb * 1024 * 1024)

    @property
    def max_recording_bytes(self) -> int:
        return int(self.max_recording_mb * 1024 * 1024)

    def allows(self, token: str) -> bool:
        """Whether `token` is one of the configured ones (compared as digests, in constant time)."""
        presented = hashlib.sha256(token.encode()).hexdigest()
        return any(hmac.compare_digest(presented, known) for known in self.tokens_sha256)

    def checked(self) -> "RecordSettings":
        """The mistakes named at start-up, not on the first recording."""
        from dvqa.dicom import syntaxes
        from dvqa.dicom.iod import VideoIOD
        from dvqa.quality.metrics import SSIM_DEFINITIONS

        tokens = (self.tokens_sha256,) if isinstance(self.tokens_sha256, str) else tuple(self.tokens_sha256)
        tokens = tuple(str(t).strip().lower() for t in tokens)
        bad = next((t for t in tokens if not _HEX64.match(t)), None)
        if bad is not None:
            raise UsageError(f"record.tokens_sha256: {bad[:12]}... is not a SHA-256 digest in hex; give "
                             "`printf %s \"$TOKEN\" | sha256sum` of each token, never the token itself.")
        origin = self.recorder_origin.rstrip("/")
        if origin and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
            raise UsageError("record.recorder_origin: give an origin such as https://app.example.org (scheme and "
                             "host, no path; no wildcard).")
        if min(self.max_chunk_mb, self.max_recording_mb, self.idle_expiry_s) <= 0 or self.max_chunk_mb > 1024:
            raise UsageError("record: max_chunk_mb (at most 1024), max_recording_mb and idle_expiry_s must be "
                             "positive.")
        if self.retention_days is not None and not self.retention_days > 0:
            raise UsageError("record.retention_days must be positive (days; null keeps finished recordings).")
        if not 1 <= self.max_recordings <= 1000 or not 1 <= self.conversions <= 64:
            raise UsageError("record: max_recordings must be 1-1000 and conversions 1-64.")
        VideoIOD.named(self.iod)
        if self.syntax != "auto" and self.syntax not in syntaxes.writable_names():
            raise UsageError(f"record.syntax {self.syntax}: use auto or one of {', '.join(syntaxes.writable_names())}.")
        if self.ssim not in SSIM_DEFINITIONS:
            raise UsageError(f"record.ssim {self.ssim}: use {' or '.join(SSIM_DEFINITIONS)}.")
        if (self.sign_key is None) != (self.sign_cert is None):
            raise UsageError("record: give both sign_key and sign_cert, or neither.")
        if self.audit_key_env and not self.audit:
            raise UsageError("record.audit_key_env needs record.audit (the log to append to).")
        pacs = self.pacs.checked() if self.pacs else None
        spool = Path(self.spool_dir) if self.spool_dir else default_spool_dir()
        if self.scheduler is not None:
            if not tokens:
                raise UsageError("--scheduler (record.scheduler) sends recordings' conversions to a Dask cluster, but "
                                 "recording ingestion is off: give record.tokens_sha256 in --config, or drop "
                                 "--scheduler.")
            parse(self.scheduler)
            require_absolute(self.scheduler, [spool])
        return replace(self, tokens_sha256=tokens, recorder_origin=origin, pacs=pacs, spool_dir=spool)


_RECORD_PATHS = {"spool_dir", "sign_key", "sign_cert", "audit"}
_PACS_PATHS = {"tls_ca", "tls_cert", "tls_key"}


def _known(data: dict, cls: type, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise UsageError(f"{where}: unknown setting {unknown[0]!r}; use {', '.join(sorted(known))}.")


def from_mapping(data: object, where: str) -> RecordSettings:
    """The `record:` mapping of a config file (`where` names the file in messages), checked."""
    if data is None:
        return RecordSettings()
    if isinstance(data, RecordSettings):
        return data.checked()
    if not isinstance(data, dict):
        raise UsageError(f"{where}: record must be a mapping of recording settings.")
    _known(data, RecordSettings, f"{where}: record")
    values = dict(data)
    for key in _RECORD_PATHS & values.keys():
        values[key] = Path(str(values[key])) if values[key] is not None else None
    pacs = values.get("pacs")
    if pacs is not None:
        if not isinstance(pacs, dict):
            raise UsageError(f"{where}: record.pacs must be a mapping (host/port or stow).")
        _known(pacs, PacsTarget, f"{where}: record.pacs")
        pacs = dict(pacs)
        for key in _PACS_PATHS & pacs.keys():
            pacs[key] = Path(str(pacs[key])) if pacs[key] is not None else None
        try:
            values["pacs"] = PacsTarget(**pacs)
        except TypeError as exc:
            raise UsageError(f"{where}: bad record.pacs setting: {exc}.") from None
    if values.get("scheduler") is not None:
        values["scheduler"] = _cluster(values["scheduler"], where)
    try:
        return RecordSettings(**values).checked()
    except TypeError as exc:
        raise UsageError(f"{where}: bad record setting: {exc}.") from None


_CLUSTER_KEYS = {"address": "scheduler", "ca": "ca", "cert": "cert", "key": "key",
                 "allow_clear_text": "allow_clear_text", "require_tls": "require_tls",
                 "worker_timeout_s": "worker_wait_s"}


def _cluster(data: object, where: str) -> Cluster:
    """record.scheduler: an address (or local:N), or a mapping with the address and how to reach it (the options
    of `dvqa serve --scheduler`)."""
    if isinstance(data, Cluster):
        return data
    if isinstance(data, str):
        return Cluster(data)
    if not isinstance(data, dict) or "address" not in data:
        raise UsageError(f"{where}: record.scheduler must be an address (tls://HOST:8786 or local:N) or a mapping "
                         "with address (and ca, cert, key, allow_clear_text, require_tls, worker_timeout_s).")
    unknown = sorted(set(map(str, data)) - set(_CLUSTER_KEYS))
    if unknown:
        raise UsageError(f"{where}: record.scheduler: unknown setting {unknown[0]!r}; use "
                         f"{', '.join(sorted(_CLUSTER_KEYS))}.")
    values = {_CLUSTER_KEYS[k]: v for k, v in data.items()}
    for key in ("ca", "cert", "key"):
        if values.get(key) is not None:
            values[key] = Path(str(values[key]))
    return Cluster(**values)
