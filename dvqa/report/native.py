"""What an FFmpeg build really is, read from its binaries: configuration, license string, and the
shared libraries it links (ELF needed entries) and loads (/proc/self/maps).

Two builds can be read: the one bundled in the installed `av` wheel (auditwheel puts its libraries
in `av.libs/`, with a hash in each name), and an external `ffmpeg` program (its `-buildconf`, `-L`
and `ldd`), so a site can check the build it deploys.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dvqa.core.digest import sha256_file
from dvqa.core.errors import InputError

# auditwheel's names keep the library's name and add an 8-digit hash: libx264-d6533a8d.so.165
_MANGLED = re.compile(r"^lib(?P<name>.+?)-[0-9a-f]{8}\.so(?:\.(?P<version>[\d.]+))?$")
_PLAIN = re.compile(r"^(?:lib)?(?P<name>.+?)\.so(?:\.(?P<version>[\d.]+))?$")


@dataclass
class NativeLibrary:
    name: str  # without lib prefix, hash and .so suffix: "x264", "avcodec"
    file: str  # the file name as installed
    path: str
    soversion: str  # from the file name: the ABI version, not the release number
    sha256: str
    needed: list[str] = field(default_factory=list)  # ELF DT_NEEDED entries
    loaded: bool = False  # mapped into this process after `import av`


@dataclass
class FFmpegBuild:
    origin: str  # where it came from, in a sentence
    version: str
    configuration: str
    license_string: str  # what FFmpeg says about itself
    libraries: list[NativeLibrary]

    @property
    def flags(self) -> set[str]:
        return {part.split("=")[0] for part in self.configuration.split() if part.startswith("--")}


def identity(file_name: str) -> tuple[str, str]:
    """(name, soversion) of a shared library file name, hashed by auditwheel or not."""
    for pattern in (_MANGLED, _PLAIN):
        m = pattern.match(file_name)
        if m:
            return m.group("name"), m.group("version") or ""
    return file_name, ""


def elf_needed(path: Path) -> list[str]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        dynamic = ELFFile(handle).get_section_by_name(".dynamic")
        return [tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED"] if dynamic else []


def _mapped_files() -> set[str]:
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: what is loaded cannot be read this way
        return set()
    return {line.split(None, 5)[5].strip() for line in text.splitlines() if len(line.split(None, 5)) == 6}


def bundled() -> FFmpegBuild:
    """The FFmpeg inside the installed `av` wheel."""
    import av

    package = Path(av.__file__).resolve().parent
    folder = package.parent / "av.libs"
    if not folder.is_dir():
        raise InputError(f"{package}: this av installation has no av.libs folder (not a manylinux wheel); "
                         "assess the FFmpeg it links with --ffmpeg or from your distribution's packages.")
    mapped = {Path(p).name for p in _mapped_files()}
    libraries = []
    for path in sorted(folder.iterdir()):
        if ".so" not in path.name:
            continue
        name, soversion = identity(path.name)
        libraries.append(NativeLibrary(name, path.name, str(path), soversion, sha256_file(path), elf_needed(path),
                                       path.name in mapped))
    inside = {lib.file for lib in libraries}
    system = sorted({n for lib in libraries for n in lib.needed if n not in inside}
                    | {n for ext in package.rglob("*.so") for n in elf_needed(ext) if n not in inside})
    for soname in system:  # outside the wheel: the system's, found by the dynamic linker
        name, soversion = identity(soname)
        libraries.append(NativeLibrary(name, soname, "(system)", soversion, "", [], soname in mapped))
    avcodec = next((lib for lib in libraries if lib.name == "avcodec"), None)
    if avcodec is None:
        raise InputError(f"{folder}: no libavcodec in the av wheel's libraries; reinstall av.")
    configuration, license_string = ffmpeg_says(Path(avcodec.path), "avcodec")
    version = ".".join(map(str, av.library_versions["libavcodec"]))
    return FFmpegBuild(f"bundled with PyAV {av.__version__} ({folder})", f"{av.ffmpeg_version_info} "
                       f"(libavcodec {version})", configuration, license_string, libraries)


def ffmpeg_says(library: Path, name: str) -> tuple[str, str]:
    """(configuration, license) as the library itself answers: FFmpeg's public C API
    (avcodec_configuration(), avcodec_license(); the same for every lib<name>)."""
    import ctypes

    handle = ctypes.CDLL(str(library))  # already mapped after `import av`: the same copy
    answers = []
    for function in (f"{name}_configuration", f"{name}_license"):
        call = getattr(handle, function)
        call.restype = ctypes.c_char_p
        answers.append(call().decode("utf-8", "replace").strip())
    return answers[0], answers[1]


def external(program: Path) -> FFmpegBuild:
    """An `ffmpeg` program: `-version`, `-buildconf`, `-L`, and what `ldd` resolves."""
    path = Path(shutil.which(str(program)) or program)
    if not path.is_file():
        raise InputError(f"--ffmpeg {program}: no such program; give the path of an ffmpeg binary.")

    def run(*args: str) -> str:
        try:
            return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"--ffmpeg {program}: it does not run ({exc}); give an ffmpeg binary.") from None

    version_line = run("-version")
    if not version_line.startswith("ffmpeg version"):
        raise InputError(f"--ffmpeg {program}: its -version does not say \"ffmpeg version\"; give an ffmpeg binary.")
    version = version_line.split("\n", 1)[0].replace("ffmpeg version ", "").split(" Copyright")[0]
    configuration = " ".join(line.strip() for line in run("-hide_banner", "-buildconf").splitlines()
                             if line.strip().startswith("--"))
    license_string = _license_of(run("-hide_banner", "-L"))
    return FFmpegBuild(f"the program {path}", version, configuration, license_string, _ldd(path))


def _license_of(text: str) -> str:
    """`ffmpeg -L`'s prose as FFmpeg's own short license string."""
    lesser = "Lesser General Public License" in text
    three = "version 3 of the License" in text
    if "nonfree" in text.lower() or "unredistributable" in text.lower():
        return "nonfree and unredistributable"
    return f"{'LGPL' if lesser else 'GPL'} version {'3' if three else ('2.1' if lesser else '2')} or later"


def _ldd(path: Path) -> list[NativeLibrary]:
    try:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"ldd cannot list {path}'s libraries ({exc}); --ffmpeg needs a Linux system with ldd.") \
            from None
    libraries = []
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("linux-vdso"):
            continue
        soname = Path(parts[0]).name
        resolved = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0]
        name, soversion = identity(soname)
        file = Path(resolved)
        libraries.append(NativeLibrary(name, soname, resolved, soversion,
                                       sha256_file(file) if file.is_file() else "", [], True))
    return libraries
