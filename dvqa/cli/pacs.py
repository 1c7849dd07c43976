"""`dvqa pacs`: echo, store, matrix, simulate."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import audit_log, fail, guarded, refuse_same_files, warn
from dvqa.core import outputs, signals
from dvqa.core.errors import UsageError
from dvqa.dicom import syntaxes
from dvqa.dicom.iod import VideoIOD
from dvqa.pacs import matrix, simulate
from dvqa.pacs import network as pacs
from dvqa.pacs import profiles as pacsprofiles
from dvqa.pacs.network import Peer


def register(main: click.Group) -> None:
    main.add_command(pacs_group)


@click.group("pacs", cls=options.Group)
def pacs_group() -> None:
    """Send to a PACS and record what it accepted."""


def _own_aet_and_timeout(fn):
    fn = click.option("--timeout", default=pacs.DEFAULT_TIMEOUT, show_default=True,
                      help="Seconds for each network step.")(fn)
    return click.option("--aet", "calling_aet", default=pacs.DEFAULT_AET, show_default=True,
                        help="dvqa's own AE title.")(fn)


def _peer_options(port_help: str, port_required: bool):
    def decorate(fn):
        fn = _tls_options(fn)
        fn = options.debug(fn)
        fn = options.output_format("text", "json")(fn)
        fn = _own_aet_and_timeout(fn)
        fn = click.option("--called-aet", default=pacs.DEFAULT_CALLED_AET, show_default=True,
                          help="The PACS's AE title.")(fn)
        fn = click.option("--port", type=int, required=port_required, help=port_help)(fn)
        return click.option("--host", default=pacs.DEFAULT_HOST, show_default=True,
                            help="The PACS's host name or address.")(fn)
    return decorate


def _tls_options(fn):
    for option in reversed([
        click.option("--tls", is_flag=True, help="DICOM over TLS (PS3.15 B.1); the PACS's certificate is verified."),
        click.option("--tls-ca", type=options.InputPath(dir_okay=False),
                     help="PEM certificates trusted for the PACS (default: the system's). Implies --tls."),
        click.option("--tls-cert", type=options.InputPath(dir_okay=False),
                     help="dvqa's own PEM certificate, for a PACS that requires one. Implies --tls."),
        click.option("--tls-key", type=options.InputPath(dir_okay=False),
                     help="The unencrypted PEM key of --tls-cert (if not in the same file)."),
    ]):
        fn = option(fn)
    return fn


def _tls(tls: bool, ca: Path | None, cert: Path | None, key: Path | None) -> pacs.Tls | None:
    if key and not cert:
        raise UsageError("--tls-key needs --tls-cert.")
    return pacs.Tls(ca, cert, key) if (tls or ca or cert) else None


@pacs_group.command("echo")
@_peer_options("The PACS's DICOM port.", port_required=True)
def pacs_echo_command(host: str, port: int, called_aet: str, calling_aet: str, timeout: float, fmt: str,
                      debug: bool, tls: bool, tls_ca: Path | None, tls_cert: Path | None,
                      tls_key: Path | None) -> None:
    """C-ECHO: is the PACS there and does it accept dvqa's AE title? Exit 4 if not."""
    peer = Peer(host, port, called_aet, calling_aet, timeout, guarded(debug, lambda: _tls(tls, tls_ca, tls_cert,
                                                                                          tls_key)))
    result = guarded(debug, lambda: pacs.echo(peer))
    click.echo(json.dumps(result, indent=2) if fmt == "json" else f"OK       C-ECHO {peer} in {result['elapsed_s']} s")


@pacs_group.command("store")
@click.argument("files", nargs=-1, required=True, type=options.InputPath(dir_okay=False))
@_peer_options("The PACS's DICOM port (required unless --stow).", port_required=False)
@click.option("--retries", default=pacs.DEFAULT_RETRIES, show_default=True, type=click.IntRange(0, 20),
              help="Retries after a network failure (1 s, 2 s, 4 s ... apart). A PACS's refusal is not retried.")
@click.option("--stow", "stow_url", default=None, metavar="URL",
              help="Send with DICOMweb STOW-RS to this service root instead of DIMSE C-STORE.")
@options.syntax_choice("--fallback",
                       help="When the PACS refuses a file, send a copy converted to this syntax (new SOP "
                            "instance, same series; the original is kept).")
@click.option("--fallback-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the fallback copies here (default: a temporary folder, removed afterwards).")
@click.option("--commit", is_flag=True,
              help="Request Storage Commitment and wait for the PACS's report: 'committed' means the PACS "
                   "confirmed it keeps the file.")
@click.option("--listen-port", type=int, default=None, help="With --commit: where the PACS sends its report.")
@click.option("--listen-host", default=pacs.DEFAULT_LISTEN_HOST, show_default=True,
              help="With --commit: address to listen on.")
@click.option("--commit-wait", default=pacs.DEFAULT_COMMIT_WAIT, show_default=True,
              help="With --commit: seconds to wait for the report.")
@click.option("--require-tls", is_flag=True, envvar="DVQA_REQUIRE_TLS",
              help="Refuse to send patient data without TLS (DIMSE --tls, or an https:// --stow URL). "
                   "Sites set DVQA_REQUIRE_TLS=1 to make it the default.")
@options.audit
def pacs_store_command(files: tuple[Path, ...], host: str, port: int | None, called_aet: str, calling_aet: str,
                       timeout: float, fmt: str, debug: bool, retries: int, stow_url: str | None,
                       fallback: str | None, fallback_dir: Path | None, commit: bool,
                       listen_port: int | None, listen_host: str, commit_wait: float, require_tls: bool,
                       audit_path: Path | None, audit_key_env: str | None, tls: bool, tls_ca: Path | None,
                       tls_cert: Path | None, tls_key: Path | None) -> None:
    """C-STORE (or STOW-RS) FILES, each in its own transfer syntax; say exactly what was refused.

    Exit 0 all stored, 1 the PACS refused some, 3 a file could not be read (it is not sent; the others
    are), 4 the PACS could not be reached. Files are never moved.
    """
    guarded(debug, lambda: refuse_same_files(
        [("--audit", audit_path), *_fallback_copies(files, fallback, fallback_dir)],
        [*(("FILES", path) for path in files), ("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key)]))
    audit = audit_log(audit_path, audit_key_env, debug)
    if stow_url and (commit or fallback):
        fail(UsageError("--commit and --fallback work with DIMSE C-STORE (--port), not with --stow."), debug)
    security = guarded(debug, lambda: _tls(tls, tls_ca, tls_cert, tls_key))
    if security and stow_url and not stow_url.startswith("https://"):
        fail(UsageError(f"--stow {stow_url}: the TLS options need an https:// URL."), debug)
    if security and commit and not security.cert:
        fail(UsageError("--commit over TLS needs --tls-cert (and --tls-key): the PACS connects back to dvqa to "
                        "deliver its report, and dvqa must present a certificate."), debug)
    encrypted = stow_url.startswith("https://") if stow_url else security is not None
    where = stow_url or f"{host}:{port}"
    if not encrypted:
        if require_tls:
            fail(UsageError(f"{where}: sending patient data without TLS is not allowed here (--require-tls or "
                            "DVQA_REQUIRE_TLS); use --tls (DIMSE) or an https:// --stow URL."), debug)
    if not stow_url and port is None:
        fail(UsageError("give --port (DIMSE) or --stow URL (DICOMweb)."), debug)
    if not stow_url and commit and listen_port is None:
        fail(UsageError("--commit needs --listen-port, where the PACS sends its N-EVENT-REPORT."), debug)
    peer = None if stow_url else Peer(host, port, called_aet, calling_aet, timeout, security)
    destination, protocol = (stow_url, "STOW-RS") if stow_url else (str(peer), "DIMSE C-STORE")
    results: list[pacs.StoreResult] = []
    try:
        if stow_url:
            results = guarded(debug, lambda: pacs.stow(stow_url, list(files), retries, tls=security, timeout=timeout))
        elif fallback:
            with tempfile.TemporaryDirectory(prefix="dvqa-fallback-") as scratch:
                folder = fallback_dir or Path(scratch)
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                results = guarded(debug, lambda: pacs.store_with_fallback(peer, list(files), fallback,
                                                                           folder, retries))
        else:
            results = guarded(debug, lambda: pacs.store(peer, list(files), retries))
        if commit:
            guarded(debug, lambda: pacs.commit(peer, results, (listen_host, listen_port), commit_wait))
    except KeyboardInterrupt as exc:  # during a send (StoreInterrupted knows each file's state) or the commit
        cause = exc.cause if isinstance(exc, pacs.StoreInterrupted) else exc
        done = exc.results if isinstance(exc, pacs.StoreInterrupted) else results
        code = signals.exit_code_of(cause)
        if audit:
            for r in done:
                audit.append(pacs.send_event(r, destination, protocol, code))
        for r in done:
            click.echo(f"{r.outcome:<8} {r.path}{': ' + r.message if r.message else ''}")
        click.echo(f"dvqa: interrupted ({getattr(cause, 'name', 'SIGINT')}); files not marked 'stored' were not "
                   "stored" + (", as the audit log records." if audit else "."), err=True)
        sys.exit(code)
    if audit:
        for r in results:
            audit.append(pacs.send_event(r, destination, protocol))
    if not encrypted and any(r.sent or (r.fallback or {}).get("sent") for r in results):
        # said when it happened, not before: a refusal or an unreachable PACS sent no patient data
        warn(f"patient data went to {where} unencrypted (no TLS); anyone on the network path could read it - "
             "use --tls or an https:// URL where the PACS offers it (--require-tls forbids clear text).")
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{r.outcome:<8} {r.path}{': ' + r.message if r.message else ''}")
            if r.fallback:
                f = r.fallback
                click.echo(f"{'':<8} fallback {f['syntax']}: {f['outcome']}"
                           + (f" as {f['sop_instance']} (PSNR-Y mean {f['psnr_y_mean']:.2f} dB vs the original)"
                              if f.get("psnr_y_mean") is not None else "") + (f"; {f['message']}" if f.get("message") else ""))
    sys.exit(pacs.exit_code_of(results, "committed" if commit else "stored"))


def _fallback_copies(files: tuple[Path, ...], fallback: str | None, folder: Path | None) -> list[tuple[str, Path]]:
    """Where each file's fallback copy would go in --fallback-dir (dvqa.pacs.network.store_with_fallback names
    them): two files with one name, or a copy named like a file being sent, are refused before sending."""
    if not fallback or folder is None:
        return []
    return [(f"--fallback-dir (the copy of {path})", folder / f"{path.stem}.{fallback}.dcm") for path in files]


@pacs_group.command("matrix")
@click.option("--target", "target_specs", multiple=True,
              help="NAME=AET@HOST:PORT[,wado=URL][,get] - a running PACS to test; read the files back over "
                   "WADO-RS from URL and/or with C-GET.")
@click.option("--pacs-profile", "profile_ids", multiple=True, metavar="ID",
              help="Add the rows a PACS profile documents (`dvqa pacs profiles`; 'all' for every one), marked as "
                   "from documents.")
@click.option("--iod", "iods", multiple=True, type=click.Choice([i.option for i in VideoIOD]),
              help="IODs to test (default: all three video IODs).")
@options.syntax_choice(multiple=True, help="Transfer syntaxes to test (default: every one dvqa writes).")
@options.output("Folder for matrix.json, matrix.md and matrix.html (e.g. docs/pacs-matrix).", required=True,
                folder=True, dest="out_dir")
@_own_aet_and_timeout
@_tls_options
@options.debug
def pacs_matrix_command(target_specs: tuple[str, ...], profile_ids: tuple[str, ...], iods: tuple[str, ...],
                        syntax: tuple[str, ...], out_dir: Path, calling_aet: str, timeout: float, tls: bool,
                        tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None, debug: bool) -> None:
    """Send one file per (video IOD x transfer syntax) to each target and record what it did."""
    if not target_specs and not profile_ids:
        fail(UsageError("give at least one --target NAME=AET@HOST:PORT or --pacs-profile ID."), debug)

    def work():
        refuse_same_files([("-o", out_dir / name) for name in ("matrix.json", "matrix.md", "matrix.html")],
                          [("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key)])
        security = _tls(tls, tls_ca, tls_cert, tls_key)
        targets = [matrix.Target.parse(spec, calling_aet, timeout, security) for spec in target_specs]
        chosen_profiles = pacsprofiles.load_all() if "all" in profile_ids else \
            [pacsprofiles.load(p) for p in profile_ids]
        chosen_iods = list(iods) or [i.option for i in VideoIOD]
        chosen = list(syntax) or syntaxes.writable_names()
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dvqa-matrix-") as scratch:
            cells = matrix.run(targets, chosen_iods, chosen, Path(scratch), chosen_profiles, calling_aet, timeout)
        meta = matrix.metadata()
        outputs.write_atomic(out_dir / "matrix.json", matrix.to_json(cells, meta) + "\n")
        outputs.write_atomic(out_dir / "matrix.md", matrix.to_markdown(cells, meta) + "\n")
        outputs.write_atomic(out_dir / "matrix.html", matrix.to_html(cells, meta))
        return cells, meta

    cells, meta = guarded(debug, work)
    click.echo(matrix.to_markdown(cells, meta))


@pacs_group.command("simulate")
@click.option("--port", type=int, required=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--aet", default="SIMULATED", show_default=True, help="The simulated PACS's AE title.")
@click.option("--accept", "accepts", multiple=True, metavar="SOP=TS[,TS...]",
              help="A SOP class and the transfer syntaxes accepted for it, by name or UID: "
                   "endoscopic=h264-high-4.1,mjpeg (IOD names as --iod takes, syntax names from `dvqa syntaxes`). "
                   "Repeatable.")
@click.option("--pacs-profile", "profile_id", default=None, metavar="ID",
              help="Accept exactly what a PACS profile documents (`dvqa pacs profiles`), instead of --accept.")
@click.option("--fault", default="none", show_default=True, type=click.Choice(list(simulate.FAULTS)),
              help="Answer every C-STORE with 0xA700 out of resources, abort the association, or never answer.")
@click.option("--store-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep received files here (private files, named by a validated SOP Instance UID).")
@click.option("--allow-aet", "allow_aets", multiple=True, metavar="AET",
              help="Accept associations only from this calling AE title (repeatable; default: any).")
@options.debug
def pacs_simulate_command(port: int, host: str, aet: str, accepts: tuple[str, ...], profile_id: str | None,
                          fault: str, store_dir: Path | None, allow_aets: tuple[str, ...], debug: bool) -> None:
    """Run a Storage SCP that accepts exactly --accept (or a --pacs-profile) and misbehaves as --fault says.

    A test tool, not a PACS: it listens on 127.0.0.1 by default and accepts any calling AE title unless
    --allow-aet names some. Ctrl-C stops it. A profile whose sources do not say what it accepts cannot be
    simulated (exit 2).
    """
    if bool(accepts) == bool(profile_id):
        fail(UsageError("give either --accept SOP=TS[,TS...] (repeatable) or --pacs-profile ID."), debug)
    accept: dict[str, list[str]] = {}
    if profile_id:
        accept = guarded(debug, lambda: pacsprofiles.load(profile_id).accept_map([i.sop_class for i in VideoIOD]))
    for spec in accepts:
        sop, uids = guarded(debug, lambda: _accepted(spec))
        accept.setdefault(sop, []).extend(uids)
    if store_dir:
        store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    click.echo(f"listening {aet}@{host}:{port}; fault: {fault}", err=True)
    try:
        simulate.start(host, port, aet, simulate.Behaviour(accept, fault, store_dir, allow_aet=allow_aets),
                       block=True)
    except KeyboardInterrupt:
        pass


_UID = re.compile(r"[0-9]+(\.[0-9]+)+")


def _accepted(spec: str) -> tuple[str, list[str]]:
    """--accept SOP=TS[,TS...]: the SOP class as an IOD name (endoscopic) or a UID, each transfer syntax as a
    name from `dvqa syntaxes` (h264-high-4.1) or a UID - the names every other option takes."""
    sop, _, listed = spec.partition("=")
    iods = {i.option: i.sop_class for i in VideoIOD}
    if not listed or not sop:
        raise UsageError(f"--accept {spec!r}: write SOP=TS[,TS...], e.g. endoscopic=h264-high-4.1,mjpeg "
                         "(names or UIDs).")
    sop = iods.get(sop.strip(), sop.strip())
    if not _UID.fullmatch(sop):
        raise UsageError(f"--accept {spec!r}: {sop!r} is neither a video IOD ({', '.join(iods)}) nor a SOP class "
                         "UID.")
    uids = []
    for name in (n.strip() for n in listed.split(",")):
        try:
            uids.append(syntaxes.get(name).uid)
        except KeyError:
            if not _UID.fullmatch(name):
                raise UsageError(f"--accept {spec!r}: {name!r} is neither a transfer syntax name "
                                 f"({', '.join(syntaxes.names())}) nor a UID.") from None
            uids.append(name)
    return sop, uids


@pacs_group.command("profiles")
@options.output_format("text", "json")
@options.debug
def pacs_profiles_command(fmt: str, debug: bool) -> None:
    """List the PACS profiles in rules/pacs/: what each system's documents say it accepts, and where from."""
    loaded = guarded(debug, pacsprofiles.load_all)
    if fmt == "json":
        click.echo(json.dumps([p.to_dict() for p in loaded], indent=2))
        return
    names = {s.uid: s.name for s in syntaxes.SYNTAXES}
    for p in loaded:
        if p.documented:
            video = [names[u] for u in p.transfer_syntaxes if u in names]
            accepted = ", ".join(video) or "no video transfer syntax dvqa writes"
        else:
            accepted = "unknown"
        click.echo(f"{p.id:<24} {p.evidence:<22} {accepted}")
        for source in p.sources:
            click.echo(f"{'':<24} source: {source.title} ({source.dated})")
