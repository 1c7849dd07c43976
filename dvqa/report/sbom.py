"""A CycloneDX SBOM of the installed dvqa, with the native libraries inside the av wheel as
components of their own.

Tools that read package metadata see "av" and stop there; the libraries it vendors (libavcodec,
libx264, gnutls, ...) are what a premarket cybersecurity SBOM is about, so each is listed with its
file name, ABI version, SHA-256 and license, as a dependency of av.
"""

from __future__ import annotations

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from dvqa import __version__

SPDX_LIKE = ("-or-later", "-only", " OR ", " WITH ", "BSD-", "MIT", "Apache-", "Zlib", "X11", "MPL-", "ISC")


def _licenses(text: str) -> list:
    if not text or text == "NOASSERTION":
        return []
    if any(marker in text for marker in SPDX_LIKE) and " License" not in text and ";" not in text:
        return [LicenseExpression(text)]
    return [DisjunctiveLicense(name=text)]  # free text from package metadata, kept as written


def bom(report: dict) -> str:
    """CycloneDX 1.6 JSON for a `dvqa report licenses` record."""
    document = Bom()
    document.metadata.component = Component(name="dvqa", version=__version__, type=ComponentType.APPLICATION,
                                            bom_ref="dvqa")
    packages = {}
    for package in report["python_packages"]:
        name = package["name"]
        component = Component(name=name, version=package["version"], type=ComponentType.LIBRARY,
                              bom_ref=f"pypi:{name.lower()}", licenses=_licenses(package["license"]),
                              purl=PackageURL("pypi", name=name.lower(), version=package["version"]),
                              properties=[Property(name="dvqa:license-from", value=package["from"])])
        document.components.add(component)
        packages[name.lower()] = component
    ffmpeg = report["ffmpeg"]
    native = []
    for library in ffmpeg["libraries"]:
        if library["path"] == "(system)":
            continue  # the operating system's, not distributed with dvqa
        component = Component(
            name=f"lib{library['name']}", version=library["soversion"] or None, type=ComponentType.LIBRARY,
            bom_ref=f"native:{library['file']}", licenses=_licenses(library["license"]),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=library["sha256"])] if library["sha256"] else [],
            description=f"license from {library['license_source']}",
            properties=[Property(name="dvqa:file", value=library["file"]),
                        Property(name="dvqa:version-kind", value="ELF soversion (ABI), not the release number")])
        document.components.add(component)
        native.append(component)
    if "av" in packages:
        document.register_dependency(packages["av"], native)
    document.register_dependency(document.metadata.component, list(packages.values()))
    return JsonV1Dot6(document).output_as_string(indent=2)
