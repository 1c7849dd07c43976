"""Which license each native library an FFmpeg build links is under, and where that was read.

Keyed by the library's name without "lib"... suffixes ("x264" for libx264-d6533a8d.so.165 or
libx264.so.164). Each entry: SPDX expression, the source the assignment was taken from, and what
it obliges in combination with FFmpeg. Facts from each project's own license file; not legal advice.
A library missing here is reported as NOASSERTION and named, never assumed harmless.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LibraryLicense:
    spdx: str
    source: str
    note: str = ""


GPL_ONLY = "GPL"  # a library under the GPL alone: linking it makes the whole FFmpeg build GPL

FFMPEG_LIBRARIES = {"avcodec", "avformat", "avutil", "avfilter", "avdevice", "swscale", "swresample", "postproc"}

TABLE: dict[str, LibraryLicense] = {
    "x264": LibraryLicense("GPL-2.0-or-later", "x264 COPYING (https://code.videolan.org/videolan/x264)",
                           "GPL only (a commercial licence is sold separately by x264 LLC); FFmpeg's configure "
                           "requires --enable-gpl for it"),
    "x265": LibraryLicense("GPL-2.0-or-later", "x265 COPYING (https://bitbucket.org/multicoreware/x265_git)",
                           "GPL only (commercial licence from MulticoreWare); FFmpeg requires --enable-gpl"),
    "xvidcore": LibraryLicense("GPL-2.0-or-later", "Xvid LICENSE (https://www.xvid.com)",
                               "FFmpeg requires --enable-gpl"),
    "postproc": LibraryLicense("GPL-2.0-or-later", "FFmpeg LICENSE.md: libpostproc is one of FFmpeg's GPL parts"),
    "rubberband": LibraryLicense("GPL-2.0-or-later", "Rubber Band COPYING (https://breakfastquay.com/rubberband/)",
                                 "FFmpeg requires --enable-gpl"),
    "vidstab": LibraryLicense("GPL-2.0-or-later", "vid.stab LICENSE (https://github.com/georgmartius/vid.stab)",
                              "FFmpeg requires --enable-gpl"),
    "cdio": LibraryLicense("GPL-3.0-or-later", "libcdio COPYING (https://www.gnu.org/software/libcdio/)",
                           "FFmpeg requires --enable-gpl"),
    "cdio_paranoia": LibraryLicense("GPL-3.0-or-later", "libcdio-paranoia COPYING", "FFmpeg requires --enable-gpl"),
    "cdio_cdda": LibraryLicense("GPL-3.0-or-later", "libcdio-paranoia COPYING", "FFmpeg requires --enable-gpl"),
    "vpx": LibraryLicense("BSD-3-Clause", "libvpx LICENSE and PATENTS (https://chromium.googlesource.com/webm/libvpx)"),
    "dav1d": LibraryLicense("BSD-2-Clause", "dav1d COPYING (https://code.videolan.org/videolan/dav1d)"),
    "vmaf": LibraryLicense("BSD-2-Clause-Patent", "VMAF LICENSE (https://github.com/Netflix/vmaf)",
                           "bundled by av 19's wheels (FFmpeg's libvmaf filter)"),
    "aom": LibraryLicense("BSD-2-Clause", "libaom LICENSE and PATENTS (https://aomedia.googlesource.com/aom)"),
    "SvtAv1Enc": LibraryLicense("BSD-3-Clause-Clear", "SVT-AV1 LICENSE.md and PATENTS.md "
                                "(https://gitlab.com/AOMediaCodec/SVT-AV1)", "with the AOMedia patent licence"),
    "opus": LibraryLicense("BSD-3-Clause", "Opus COPYING (https://opus-codec.org/license/)"),
    "mp3lame": LibraryLicense("LGPL-2.0-or-later", "LAME COPYING (https://lame.sourceforge.io)",
                              "an LGPL library: the checklist applies to it as to FFmpeg (item 17)"),
    "opencore-amrnb": LibraryLicense("Apache-2.0", "opencore-amr NOTICE (https://sourceforge.net/projects/opencore-amr/)",
                                     "Apache-2.0 is compatible with (L)GPL version 3 only: needs --enable-version3"),
    "opencore-amrwb": LibraryLicense("Apache-2.0", "opencore-amr NOTICE", "needs --enable-version3"),
    "webp": LibraryLicense("BSD-3-Clause", "libwebp COPYING and PATENTS (https://chromium.googlesource.com/webm/libwebp)"),
    "webpmux": LibraryLicense("BSD-3-Clause", "libwebp COPYING"),
    "sharpyuv": LibraryLicense("BSD-3-Clause", "libwebp COPYING (libsharpyuv is part of libwebp)"),
    "gnutls": LibraryLicense("LGPL-2.1-or-later", "GnuTLS LICENSE (https://www.gnutls.org)",
                             "an LGPL library: the checklist applies to it as well"),
    "nettle": LibraryLicense("LGPL-3.0-or-later OR GPL-2.0-or-later", "Nettle README (https://www.lysator.liu.se/~nisse/nettle/)"),
    "hogweed": LibraryLicense("LGPL-3.0-or-later OR GPL-2.0-or-later", "Nettle README (libhogweed is part of Nettle)"),
    "gmp": LibraryLicense("LGPL-3.0-or-later OR GPL-2.0-or-later", "GMP COPYING.LESSERv3 (https://gmplib.org)"),
    "unistring": LibraryLicense("LGPL-3.0-or-later OR GPL-2.0-or-later", "libunistring README "
                                "(https://www.gnu.org/software/libunistring/)"),
    "xcb": LibraryLicense("X11", "libxcb COPYING (https://xcb.freedesktop.org)"),
    "xcb-shape": LibraryLicense("X11", "libxcb COPYING"),
    "xcb-shm": LibraryLicense("X11", "libxcb COPYING"),
    "xcb-xfixes": LibraryLicense("X11", "libxcb COPYING"),
    "Xau": LibraryLicense("MIT-open-group", "libXau COPYING (https://gitlab.freedesktop.org/xorg/lib/libxau)"),
    "drm": LibraryLicense("MIT", "libdrm (https://gitlab.freedesktop.org/mesa/drm), core files' headers"),
    "asound": LibraryLicense("LGPL-2.1-or-later", "alsa-lib COPYING (https://www.alsa-project.org)"),
    "vpl": LibraryLicense("MIT", "oneVPL LICENSE (https://github.com/intel/libvpl)"),
    "z": LibraryLicense("Zlib", "zlib LICENSE (https://zlib.net/zlib_license.html)"),
    "theoraenc": LibraryLicense("BSD-3-Clause", "libtheora COPYING (https://www.theora.org)"),
    "theoradec": LibraryLicense("BSD-3-Clause", "libtheora COPYING"),
    "vorbis": LibraryLicense("BSD-3-Clause", "libvorbis COPYING (https://xiph.org/vorbis/)"),
    "vorbisenc": LibraryLicense("BSD-3-Clause", "libvorbis COPYING"),
    "openjp2": LibraryLicense("BSD-2-Clause", "OpenJPEG LICENSE (https://www.openjpeg.org)"),
    "speex": LibraryLicense("BSD-3-Clause", "Speex COPYING (https://www.speex.org)"),
    # the C and C++ runtimes: system libraries, exempt from the GPL's source requirement
    "c": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "ld-linux-x86-64": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB (the dynamic linker)", "system library"),
    "m": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "mvec": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "dl": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "rt": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "pthread": LibraryLicense("LGPL-2.1-or-later", "glibc COPYING.LIB", "system library"),
    "stdc++": LibraryLicense("GPL-3.0-or-later WITH GCC-exception-3.1", "GCC COPYING.RUNTIME", "system library"),
    "gcc_s": LibraryLicense("GPL-3.0-or-later WITH GCC-exception-3.1", "GCC COPYING.RUNTIME", "system library"),
}

# what FFmpeg's own license string (av_*_license(), `ffmpeg -L`) says, as SPDX
FFMPEG_SAYS = {
    "LGPL version 2.1 or later": "LGPL-2.1-or-later", "LGPL version 3 or later": "LGPL-3.0-or-later",
    "GPL version 2 or later": "GPL-2.0-or-later", "GPL version 3 or later": "GPL-3.0-or-later",
    "nonfree and unredistributable": "LicenseRef-FFmpeg-nonfree",
}
