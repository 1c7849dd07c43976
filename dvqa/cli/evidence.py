"""`dvqa evidence build` and `dvqa evidence verify`: the regulatory evidence bundle."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from dvqa.cli import options
from dvqa.cli.common import audit_key, guarded, passphrase, refuse_same_files
from dvqa.core.words import plural
from dvqa.core.errors import ExitCode


def register(main: click.Group) -> None:
    main.add_command(evidence_group)


@click.group("evidence", cls=options.Group)
def evidence_group() -> None:
    """One signed, verifiable folder of regulatory evidence: conversions with quality reports, validation,
    signatures, the audit trail, conformance statement, licenses and SBOM, traceability matrix."""


@evidence_group.command("build")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--inputs", "inputs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A recording (converted here) or DICOM file (collected), or a folder of them; repeatable.")
@click.option("--junit", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="JUnit XML of the test run that verified this dvqa (pytest --junitxml); repeatable. Without "
                   "it the traceability step fails.")
@click.option("--key", "key_path", type=options.InputPath(dir_okay=False),
              help="Sign the manifest (and the converted files) with this private key: PEM or PKCS#12.")
@click.option("--cert", "cert_path", type=options.InputPath(dir_okay=False),
              help="The signer's X.509 certificate, with a PEM --key.")
@options.passphrase
@click.option("--trust", "trust_path", type=options.InputPath(dir_okay=False),
              help="CA certificates (PEM) every signature in the bundle must chain to.")
@options.rules_profile("Quality floors and rules for the conversions and the validation")
@click.option("--deidentify", is_flag=True,
              help="Collect DICOM files through PS3.15's Basic Application Level Confidentiality Profile (UIDs "
                   "remapped inside the bundle, the mapping never kept; the originals' signatures verified first) "
                   "and name no input in the bundle, for a bundle that leaves the hospital.")
@options.audit_key
@options.output_format("text", "json")
@options.debug
def build_command(out: Path, inputs: tuple[Path, ...], junit: tuple[Path, ...], key_path: Path | None,
                  cert_path: Path | None, passphrase_env: str | None, trust_path: Path | None, profile: str | None,
                  deidentify: bool, audit_key_env: str | None, fmt: str, debug: bool) -> None:
    """Build the bundle in OUT (a new folder): every step recorded as passed or failed in index.html/.pdf,
    every file hashed in manifest.json, the manifest signed. Exit 1 when any step failed."""
    from dvqa.evidence import bundle
    from dvqa.serve.conformance import sections
    from dvqa.trust.signature import Signer
    from dvqa.trust.verification import load_trust

    def work():
        refuse_same_files([("OUT", out)], [*(("--inputs", path) for path in inputs), *(("--junit", f) for f in junit),
                                           ("--key", key_path), ("--cert", cert_path), ("--trust", trust_path)])
        key = audit_key(audit_key_env)
        signer = Signer.load(key_path, cert_path, passphrase(passphrase_env)) if key_path else None
        settings = bundle.Settings(inputs=list(inputs), junit=list(junit), signer=signer, profile=profile,
                                   audit_key=key, deidentify=deidentify, services=sections(),
                                   trust=load_trust(trust_path) if trust_path else None)
        say = (lambda line: click.echo(line, err=True)) if sys.stderr.isatty() and fmt == "text" else None
        return bundle.build(out, settings, say)

    built = guarded(debug, work)
    for note in built.notes:
        click.echo(f"note     {note}", err=True)
    if fmt == "json":
        click.echo(json.dumps({"folder": str(built.folder), "ok": built.ok, "notes": built.notes,
                               "steps": [step.__dict__ for step in built.steps],
                               "files": len(built.manifest["files"]), "signed": bool(built.manifest["signature"])},
                              indent=2))
    else:
        for step in built.steps:
            click.echo(f"{step.status:<8} {step.name}: {step.summary}")
        click.echo(f"bundle   {built.folder}: {plural(len(built.manifest['files']), 'file')} in the manifest, "
                   + ("signed" if built.manifest["signature"] else "NOT signed (give --key and --cert)")
                   + f"; open {os.path.join(built.folder, 'index.html')}")
    sys.exit(int(ExitCode.OK if built.ok else ExitCode.CHECK_FAILED))


@evidence_group.command("verify")
@click.argument("folder", type=options.InputPath(file_okay=False))
@click.option("--trust", "trust_path", type=options.InputPath(dir_okay=False),
              help="CA certificates (PEM) the manifest's signer must chain to. Without it the signer is not "
                   "authenticated and verify fails.")
@click.option("--accept-unauthenticated-signer", is_flag=True,
              help="Without --trust, pass a manifest whose signer cannot be authenticated (anyone can make a "
                   "certificate with any name): compare the printed SHA-256 fingerprint yourself.")
@options.output_format("text", "json")
@options.debug
def verify_command(folder: Path, trust_path: Path | None, accept_unauthenticated_signer: bool, fmt: str,
                   debug: bool) -> None:
    """Check a bundle: every file's SHA-256, nothing added or removed, the manifest's signature, and the
    build's own verdict. Exit 0 when all hold and every step of the build passed, 1 otherwise."""
    from dvqa.evidence import manifest
    from dvqa.trust.verification import load_trust

    check = guarded(debug, lambda: manifest.check(folder, load_trust(trust_path) if trust_path else None,
                                                  accept_unauthenticated_signer))
    if fmt == "json":
        click.echo(json.dumps(check.to_dict(), indent=2))
    else:
        for problem in check.problems:
            click.echo(f"error    {problem}")
        if check.verdict:
            click.echo(f"build    {check.verdict}")
        signed = (f"signed by {check.signer}" + (f" ({check.chain})" if check.chain else
                                                 f" (NOT authenticated: certificate SHA-256 {check.fingerprint}, "
                                                 "accepted by --accept-unauthenticated-signer)")
                  if check.signer else "")
        click.echo(f"bundle   {folder}: {plural(check.files, 'file')} in the manifest; "
                   + ("every hash and the signature hold" + (f", {signed}" if signed else "") if check.ok
                      else plural(len(check.problems), "problem")))
    sys.exit(int(ExitCode.OK if check.ok else ExitCode.CHECK_FAILED))
