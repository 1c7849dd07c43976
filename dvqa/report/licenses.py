"""`dvqa report licenses`: under which terms the installed dvqa's FFmpeg may be distributed, decided
from what is linked, not from what FFmpeg says about itself.

The effective license of an FFmpeg build is that of its strongest obligation: one GPL-only library
linked (libx264) makes the whole build GPL whatever FFmpeg's own string says; a library that needs
version 3 (Apache-2.0 OpenCORE, LGPLv3 code) moves it to version 3; nonfree parts make it not
redistributable (FFmpeg LICENSE.md; https://ffmpeg.org/legal.html). Facts for a distributor to act
on, not legal advice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata

from dvqa import __version__
from dvqa.report.license_table import FFMPEG_LIBRARIES, FFMPEG_SAYS, TABLE, LibraryLicense
from dvqa.report.native import FFmpegBuild, NativeLibrary

LEGAL = "https://ffmpeg.org/legal.html"
UNKNOWN = LibraryLicense("NOASSERTION", "not in dvqa's table (dvqa/report/license_table.py)",
                         "unknown to dvqa: read its license before distributing")


@dataclass(frozen=True)
class ChecklistItem:
    number: int  # the item of FFmpeg's License Compliance Checklist
    item: str
    status: str  # "met", "not met", "distributor" (only the distributor can do or show it), "note"
    finding: str


def license_of(library: NativeLibrary, build: FFmpegBuild) -> LibraryLicense:
    if library.name in FFMPEG_LIBRARIES and library.name != "postproc":
        says = FFMPEG_SAYS.get(build.license_string, "NOASSERTION")
        return LibraryLicense(says, f"FFmpeg's own license string: {build.license_string!r}")
    return TABLE.get(library.name, UNKNOWN)


def _gpl_only(spdx: str) -> bool:
    return spdx.startswith("GPL-") and " OR " not in spdx and "exception" not in spdx


def assess(build: FFmpegBuild) -> dict[str, object]:
    """The verdict, the reasons, the disagreements and the checklist for one FFmpeg build."""
    libraries = [(lib, license_of(lib, build)) for lib in build.libraries]
    flags = build.flags
    # FFmpeg's own libraries carry the license FFmpeg claims; the verdict comes from what is linked to them
    linked = [(lib, lic) for lib, lic in libraries if lib.name not in FFMPEG_LIBRARIES or lib.name == "postproc"]
    gpl_libraries = [lib.file for lib, lic in linked if _gpl_only(lic.spdx)]
    needs_v3 = [lib.file for lib, lic in linked
                if lic.spdx.startswith("Apache-2.0") or lic.spdx in ("LGPL-3.0-or-later", "LGPL-3.0-only")
                or (_gpl_only(lic.spdx) and "3.0" in lic.spdx)]
    unknown = [lib.file for lib, lic in libraries if lic is UNKNOWN]
    reasons, disagreements = [], []
    says = FFMPEG_SAYS.get(build.license_string, "NOASSERTION")
    if "--enable-nonfree" in flags or says == "LicenseRef-FFmpeg-nonfree":
        verdict = "LicenseRef-FFmpeg-nonfree"
        reasons.append("configured with --enable-nonfree: FFmpeg's LICENSE.md calls such a build unredistributable")
    else:
        gpl = bool(gpl_libraries) or "--enable-gpl" in flags
        three = "--enable-version3" in flags or bool(needs_v3)
        verdict = f"{'GPL' if gpl else 'LGPL'}-{'3.0' if three else ('2.0' if gpl else '2.1')}-or-later"
        if gpl_libraries:
            reasons.append(f"GPL-only libraries are linked ({', '.join(gpl_libraries)}): the combination is GPL")
        if "--enable-gpl" in flags:
            reasons.append("configured with --enable-gpl: FFmpeg's GPL parts are built in")
        if "--enable-version3" in flags:
            reasons.append("configured with --enable-version3: FFmpeg is under version 3 of the (L)GPL")
        if needs_v3:
            reasons.append(f"libraries that need version 3 are linked ({', '.join(needs_v3)})")
        if not reasons:
            reasons.append("no GPL library, no --enable-gpl, no version-3 library: FFmpeg's default LGPL-2.1-or-later")
    if says != verdict:
        disagreements.append(f"FFmpeg says of itself {build.license_string!r} ({says}), but what it links makes it "
                             f"{verdict}")
    if gpl_libraries and "--enable-gpl" not in flags:
        disagreements.append(f"{', '.join(gpl_libraries)} linked without --enable-gpl in the configuration, which "
                             "FFmpeg's configure requires for them: the build was changed to allow it")
    if unknown:
        disagreements.append(f"{len(unknown)} linked libraries are not in dvqa's license table, so the verdict is a "
                             f"floor, not a ceiling: {', '.join(unknown)}")
    return {
        "origin": build.origin, "version": build.version, "configuration": build.configuration,
        "ffmpeg_says": build.license_string, "ffmpeg_says_spdx": says, "verdict": verdict,
        "redistributable": verdict != "LicenseRef-FFmpeg-nonfree", "reasons": reasons,
        "disagreements": disagreements,
        "libraries": [{**asdict(lib), "license": lic.spdx, "license_source": lic.source, "license_note": lic.note}
                      for lib, lic in libraries],
        "checklist": [asdict(item) for item in checklist(build, gpl_libraries, libraries)],
    }


def checklist(build: FFmpegBuild, gpl_libraries: list[str],
              libraries: list[tuple[NativeLibrary, LibraryLicense]]) -> list[ChecklistItem]:
    """FFmpeg's License Compliance Checklist (legal.html), each item's status for this build."""
    flags = build.flags
    bad_flags = sorted(flags & {"--enable-gpl", "--enable-nonfree"})
    shared = [lib.file for lib, _ in libraries if lib.name == "avcodec"]
    lgpl = sorted({lib.file for lib, lic in libraries if lic.spdx.startswith("LGPL")
                   and lib.name not in FFMPEG_LIBRARIES and "system library" not in lic.note})
    renamed = [lib.file for lib, _ in libraries if lib.name in FFMPEG_LIBRARIES and lib.file != f"lib{lib.name}.so"
               and not lib.file.startswith(f"lib{lib.name}")]
    distributor = "distributor"
    return [
        ChecklistItem(1, "Compile FFmpeg without --enable-gpl and without --enable-nonfree",
                      "not met" if bad_flags else "met",
                      f"configured with {', '.join(bad_flags)}" if bad_flags else "neither flag in the configuration"),
        ChecklistItem(2, "Link the FFmpeg libraries dynamically", "met" if shared else "not met",
                      f"libavcodec is a shared library ({shared[0]})" if shared else
                      "no shared libavcodec found: statically linked"),
        ChecklistItem(3, "Distribute FFmpeg's source code, modified or not", distributor,
                      f"FFmpeg {build.version}: ship its source with the product"),
        ChecklistItem(4, "The source corresponds exactly to the binaries distributed", distributor,
                      f"binaries: {build.origin}"),
        ChecklistItem(5, "Provide the changes to FFmpeg's source as a diff", distributor,
                      "the patches of whoever built these binaries (a wheel's or a distribution's), if any"),
        ChecklistItem(6, "Explain how FFmpeg was compiled (the configure line) in a text file with the source",
                      distributor, f"the configure line ({len(build.configuration.split())} options) is under "
                      "Configuration in this report (ffmpeg.configuration in its JSON): ship it as a text file with the "
                      "source"),
        ChecklistItem(7, "Distribute the source as a tarball or zip file", distributor, ""),
        ChecklistItem(8, "Host the source on the same web server as the binary", distributor, ""),
        ChecklistItem(9, "Say on every download page that the software uses FFmpeg under its license, with a link "
                         "to the source", distributor, ""),
        ChecklistItem(10, "Mention FFmpeg and its license in the program's about box", distributor, ""),
        ChecklistItem(11, "Mention FFmpeg and its license in the EULA", distributor, ""),
        ChecklistItem(12, "If the EULA claims ownership of the code, state that FFmpeg is not yours and who owns it",
                      distributor, ""),
        ChecklistItem(13, "Remove any prohibition of reverse engineering from the EULA", distributor, ""),
        ChecklistItem(14, "Apply the same to every translation of the EULA", distributor, ""),
        ChecklistItem(15, "Spell FFmpeg correctly", distributor, ""),
        ChecklistItem(16, "Do not rename the FFmpeg libraries to obscure names (a prefix or suffix is fine)",
                      "not met" if renamed else "met",
                      f"renamed: {', '.join(renamed)}" if renamed else
                      "the names keep lib<name>; the wheel's hash suffix is a suffix"),
        ChecklistItem(17, "Go through the list again for every LGPL external library compiled into FFmpeg",
                      distributor if lgpl else "met", ", ".join(lgpl) if lgpl else "no LGPL external library"),
        ChecklistItem(18, "Do not use any GPL library (notably libx264)", "not met" if gpl_libraries else "met",
                      f"linked: {', '.join(gpl_libraries)}" if gpl_libraries else "none linked"),
    ]


def python_packages() -> list[dict[str, str]]:
    """Every installed distribution's license, from its metadata: License-Expression, License, classifiers."""
    out = []
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        meta = dist.metadata
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        expression = meta.get("License-Expression") or ""
        text = (meta.get("License") or "").strip()
        license_ = expression or (text if text and len(text) < 80 and "\n" not in text else "") or \
            "; ".join(classifiers) or "NOASSERTION"
        source = ("License-Expression" if expression else "License field" if license_ == text else
                  "classifiers" if classifiers else "none in the metadata")
        out.append({"name": meta["Name"], "version": dist.version, "license": license_, "from": source})
    return out


def report(build: FFmpegBuild) -> dict[str, object]:
    return {"command": "report licenses", "dvqa_version": __version__, "ffmpeg": assess(build),
            "python_packages": python_packages(), "legal_reference": LEGAL}


def drift(current: dict, baseline: dict) -> list[str]:
    """How this installation differs from a validated one (a saved `report licenses` JSON).

    A validation is evidence for the bytes that were validated: a library rebuilt under the
    same version, or one package upgraded by hand, voids it. So libraries are compared by
    SHA-256 and packages by version, and dvqa and FFmpeg by version and configuration.
    """
    changes: list[str] = []

    def compare(what: str, now: object, then: object) -> None:
        if now != then:
            changes.append(f"{what}: {then} in the baseline, {now} here")

    compare("dvqa", current["dvqa_version"], baseline["dvqa_version"])
    compare("FFmpeg", current["ffmpeg"]["version"], baseline["ffmpeg"]["version"])
    compare("FFmpeg configuration", current["ffmpeg"]["configuration"], baseline["ffmpeg"]["configuration"])
    pairs = (("library", current["ffmpeg"]["libraries"], baseline["ffmpeg"]["libraries"], "sha256"),
             ("package", current["python_packages"], baseline["python_packages"], "version"))
    for kind, now_items, then_items, value in pairs:
        now, then = _index(now_items, value), _index(then_items, value)
        for name in sorted(now.keys() | then.keys(), key=str.lower):
            if name not in then:
                changes.append(f"{kind} {name}: not in the baseline, {value} {now[name]} here")
            elif name not in now:
                changes.append(f"{kind} {name}: {value} {then[name]} in the baseline, missing here")
            else:
                compare(f"{kind} {name} {value}", now[name], then[name])
    return changes


def _index(items: list[dict], value: str) -> dict[str, str]:
    """name -> value; a library the operating system provides says so (an OS update changes it)."""
    out = {}
    for item in items:
        path = item.get("path", "")
        system = "path" in item and "av.libs" not in path and ".dylibs" not in path
        out[item["name"] + (" (from the operating system)" if system else "")] = item[value]
    return out
