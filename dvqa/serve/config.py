"""What one `dvqa serve` process is configured with: the upstream PACS, where it listens, TLS, the
cache, timeouts, recording ingestion. It serves the gateway, recording ingestion, or both: a server
needs an upstream or a `record:` mapping with tokens, and without an upstream it has no gateway.
Options on the command line override the YAML file, so a site keeps its settings in one file under
configuration management and a test or a one-off run needs no file at all.

The YAML file (every key optional)::

    upstream: https://pacs.example.org/dicom-web   # the DICOMweb root the gateway stands in for (none: no gateway)
    host: 127.0.0.1
    port: 8080
    tls_cert: /etc/dvqa/serve.pem
    tls_key: /etc/dvqa/serve.key
    cache_dir: /var/cache/dvqa-serve               # private: created 0700, files 0600
    cache_max_mb: 2048
    connect_timeout_s: 5
    read_timeout_s: 60
    public_url: https://viewer.example.org/dicom-web   # how clients reach the gateway, when behind a proxy
    orthanc_rest: http://127.0.0.1:8042   # Orthanc only: read instances from its REST API (first byte sooner)
    orthanc_watch: false  # Orthanc only: every video it stores, by any route, is rendered at once (dvqa.serve.watch)
    cors_origins: [https://viewer.example.org]          # web viewers served from another origin
    prewarm: true     # a video stored through the gateway (STOW-RS) is rendered into the cache at once
    record: {...}                                       # recording ingestion (dvqa.serve.record_settings)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from dvqa.core.errors import UsageError
from dvqa.serve.record_settings import RecordSettings, from_mapping


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dvqa" / "serve"


@dataclass(frozen=True)
class ServeConfig:
    """One server's settings; `upstream` (the gateway) has no default, and without it `record` must be set."""

    upstream: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cache_dir: Path | None = None
    cache_max_mb: int = 2048
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    public_url: str = ""
    cors_origins: tuple[str, ...] = ()
    orthanc_rest: str = ""  # an Orthanc upstream's REST root: instances are read from its own file route
    prewarm: bool = True  # what is stored through the gateway is rendered at once (dvqa.serve.prewarm)
    orthanc_watch: bool = False  # what the Orthanc at orthanc_rest stores is rendered at once (dvqa.serve.watch)
    record: RecordSettings = RecordSettings()

    def checked(self) -> "ServeConfig":
        """The settings with their mistakes named before the server starts, not on the first request."""
        record = from_mapping(self.record, "the serve settings")
        if self.upstream and not self.upstream.startswith(("http://", "https://")):
            raise UsageError(f"--upstream {self.upstream}: give the upstream DICOMweb root as "
                             "http(s)://HOST:PORT/PATH (or `upstream:` in the config file).")
        if not self.upstream and not record.enabled:
            raise UsageError("nothing to serve: give the DICOMweb root to stand in front of with --upstream "
                             "http(s)://HOST:PORT/PATH, or recording ingestion as a `record:` mapping with "
                             "tokens_sha256 in --config, or both.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("give both --tls-cert and --tls-key, or neither.")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{path}: no such file; give the PEM certificate and key for TLS.")
        if not 0 < self.port < 65536:
            raise UsageError(f"port {self.port} is out of range; give 1-65535.")
        if self.cache_max_mb < 1 or self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise UsageError("cache_max_mb and the timeouts must be positive.")
        if self.orthanc_rest and not self.orthanc_rest.startswith(("http://", "https://")):
            raise UsageError("orthanc_rest: give the Orthanc server's REST root, such as http://127.0.0.1:8042.")
        if not isinstance(self.prewarm, bool) or not isinstance(self.orthanc_watch, bool):
            raise UsageError("prewarm and orthanc_watch: give true or false.")
        if self.orthanc_watch and not (self.upstream and self.orthanc_rest and self.prewarm):
            raise UsageError("orthanc_watch: true needs a gateway (upstream), the Orthanc's REST root "
                             "(orthanc_rest) and prewarm: true.")
        origins = (self.cors_origins,) if isinstance(self.cors_origins, str) else tuple(self.cors_origins)
        if any(not str(o).startswith(("http://", "https://")) or str(o).count("/") != 2 for o in origins):
            raise UsageError("cors_origins: give origins such as https://viewer.example.org (scheme and host, "
                             "no path; no wildcard).")
        return replace(self, upstream=self.upstream.rstrip("/"), cors_origins=tuple(map(str, origins)),
                       record=record,
                       public_url=self.public_url.rstrip("/"), orthanc_rest=self.orthanc_rest.rstrip("/"),
                       cache_dir=Path(self.cache_dir) if self.cache_dir else default_cache_dir())


_PATHS = {"tls_cert", "tls_key", "cache_dir"}


def load(path: Path | None, scheduler: object = None, **overrides: object) -> ServeConfig:
    """The YAML file's settings (if any), then every override that is not None; `scheduler` (a
    dvqa.core.cluster.Cluster, from --scheduler) replaces record.scheduler."""
    values: dict[str, object] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{path}: cannot read the config file ({type(exc).__name__}); "
                             "give a YAML mapping of serve settings.") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: the config file must be a YAML mapping of serve settings.")
        known = {f.name for f in fields(ServeConfig)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise UsageError(f"{path}: unknown setting {unknown[0]!r}; use {', '.join(sorted(known))}.")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if scheduler is not None:
        record = values.get("record") or {}
        if not isinstance(record, dict):
            raise UsageError(f"{path}: record must be a mapping of recording settings.")
        values["record"] = {**record, "scheduler": scheduler}
    for key in _PATHS & values.keys():
        values[key] = Path(str(values[key]))
    try:
        return ServeConfig(**values).checked()  # type: ignore[arg-type]
    except TypeError as exc:
        raise UsageError(f"bad serve setting: {exc}.") from None
