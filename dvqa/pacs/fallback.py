"""A copy of a DICOM video in another transfer syntax, for a PACS that refuses the original.

The frames are decoded from the original's encapsulated stream, kept losslessly (lossless H.264,
x264 at QP 0, in a temporary Matroska file, at the rate Frame Time states), and converted by `dvqa convert` with the
patient, study and series copied from the original: the copy is a new SOP instance in the same
series, and its quality is measured against the decoded original like any conversion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import pydicom

from dvqa.convert.pipeline import ConversionResult, ConvertOptions, convert
from dvqa.core.errors import InputError
from dvqa.dicom.iod import Metadata, VideoIOD
from dvqa.quality.recheck import open_distorted


def transcode_dicom(source: Path, syntax: str, output: Path) -> ConversionResult:
    ds = pydicom.dcmread(str(source), stop_before_pixels=True)
    iod = next((i for i in VideoIOD if i.sop_class == str(ds.SOPClassUID)), None)
    if iod is None:
        raise InputError(f"{source}: SOP class {ds.SOPClassUID} is not a video IOD dvqa writes; no fallback copy.")
    original = open_distorted(source)  # the DICOM's own frames, decoded fragment by fragment
    with tempfile.TemporaryDirectory(prefix=".dvqa-fallback-", dir=output.parent) as tmp:
        frames = Path(tmp) / "frames.mkv"
        with av.open(str(frames), "w", format="matroska") as container:
            stream = container.add_stream("libx264", rate=original.rate,
                                          options={"qp": "0", "preset": "ultrafast"})  # lossless
            stream.width, stream.height = original.width, original.height
            stream.pix_fmt = "yuv422p" if original.pix_fmt.endswith("422p") else "yuv420p"
            stream.codec_context.color_range = 2 if original.color_range == "full" else 1
            stream.codec_context.colorspace = 1
            period = 1 / original.rate
            for index, frame in enumerate(original.frames):
                frame.pts, frame.time_base = index, period
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        options = ConvertOptions(syntax=syntax, iod=iod.option, metadata=Metadata.from_dicom_file(source),
                                 passthrough=False)
        return convert(frames, output, options)
