"""Quality evidence: every output frame scored against the source frame it shows.

`convert` feeds each coded packet, as it is written to the stream file that
becomes the DICOM's Pixel Data, to a decoder of its own (`WrittenStreamMeter`),
and scores the decoded picture against the shaped source frame the encoder was
given for that output slot. The work overlaps the encoder; only the frames
between the encoder's input and the decoder's output are held, so memory does
not grow with the video's length. `dvqa quality` does the same for a pair of
existing files (`measure_files`).
"""

from __future__ import annotations

import heapq
import io
import math
from array import array
from collections import deque
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image

from dvqa.core.errors import DvqaError
from dvqa.quality.metrics import (
    PSNR_DEFINITION,
    SSIM_DEFINITIONS,
    FrameComparer,
    FrameScores,
    crop,
    luma,
)
from dvqa.video.threads import frame_threaded

WORST = 5
THUMB_WIDTH = 320
DIFF_GAIN = 8  # |Y difference| x 8 in the difference thumbnail
INFINITY_JSON = "Infinity"  # JSON has no infinity; float("Infinity") and Number("Infinity") read it
PER_FRAME_FIELDS = ("output_frame", "source_frame", "source_pts", "output_pts",
                    "psnr_y", "psnr_cb", "psnr_cr", "psnr", "ssim_y")


def json_number(value: float) -> float | str:
    if math.isinf(value):
        return INFINITY_JSON if value > 0 else "-" + INFINITY_JSON
    return value


def psnr_of_mean_mse(values: np.ndarray) -> float:
    """The PSNR of the frames' mean MSE: FFmpeg's psnr filter's "average", finite unless all are identical."""
    mse = np.where(np.isinf(values), 0.0, 255.0**2 / np.power(10.0, values / 10.0))
    mean = float(mse.mean())
    return math.inf if mean == 0 else 10 * math.log10(255.0**2 / mean)


def _lower_percentile(values: np.ndarray, q: float) -> float:
    # the value at rank floor(q (n - 1)): no interpolation, so infinities stay exact
    return float(np.sort(values)[int(math.floor(q / 100 * (len(values) - 1)))])


@dataclass
class Thumbs:
    """Small pictures of one frame pair: source | decoded | amplified Y difference.

    Kept uncompressed while the worst frames are still being decided; PNG only
    for the report (compressing each candidate would cost more than scoring it).
    """

    output_frame: int
    source: Image.Image
    decoded: Image.Image
    difference: Image.Image

    def png(self) -> dict[str, bytes]:
        return {name: _png(getattr(self, name)) for name in ("source", "decoded", "difference")}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _rgb_thumb(frame: av.VideoFrame, width: int, height: int) -> Image.Image:
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_image()


def make_thumbs(index: int, reference: av.VideoFrame, distorted: av.VideoFrame) -> Thumbs:
    width = min(THUMB_WIDTH, reference.width)
    height = max(2, round(reference.height * width / reference.width))
    diff = np.abs(luma(reference).astype(np.int16) - luma(distorted).astype(np.int16)) * DIFF_GAIN
    diff_image = Image.fromarray(np.clip(diff, 0, 255).astype(np.uint8)).resize((width, height), Image.BOX)
    return Thumbs(index, _rgb_thumb(reference, width, height), _rgb_thumb(distorted, width, height),
                  diff_image)


@dataclass
class QualityResult:
    ssim: str  # "fast" or "reference"
    per_frame: dict[str, array]
    dropped_source_frames: int
    duplicated_output_frames: int
    thumbs: dict[int, Thumbs] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.per_frame["output_frame"])

    def values(self, name: str) -> np.ndarray:
        return np.frombuffer(self.per_frame[name], dtype=np.float64) if name not in (
            "output_frame", "source_frame") else np.asarray(self.per_frame[name])

    def worst(self, name: str, count: int = WORST) -> list[int]:
        """Output frames with the lowest values of a metric, worst first (ties: earlier first)."""
        v = self.values(name)
        return [int(i) for i in np.argsort(v, kind="stable")[:count]]

    def statistic(self, name: str, which: str) -> float:
        v = self.values(name)
        if which == "mean":
            return psnr_of_mean_mse(v) if name.startswith("psnr") else float(v.mean())
        if which == "min":
            return float(v.min())
        if which in ("p1", "p5"):
            return _lower_percentile(v, float(which[1:]))
        raise ValueError(f"unknown statistic {which!r}")

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in ("psnr_y", "psnr_cb", "psnr_cr", "psnr", "ssim_y"):
            out[name] = {
                **{s: json_number(round(self.statistic(name, s), 6)) for s in ("mean", "min", "p1", "p5")},
                "worst": [{"output_frame": k, "value": json_number(float(self.values(name)[k]))}
                          for k in self.worst(name)],
            }
        return out

    def to_dict(self, per_frame: bool = True) -> dict[str, object]:
        d: dict[str, object] = {
            "frames": self.frames,
            "ssim_definition": {"name": self.ssim, "description": SSIM_DEFINITIONS[self.ssim]},
            "psnr_definition": PSNR_DEFINITION,
            "statistics": ("mean of PSNR = PSNR of the mean MSE over frames (FFmpeg psnr 'average'); "
                           "mean of SSIM = arithmetic mean; p1/p5 = value at rank floor(q(n-1)) "
                           "of the sorted frames, no interpolation"),
            "infinity_in_json": f'the string "{INFINITY_JSON}" (identical frames)',
            "dropped_source_frames": self.dropped_source_frames,
            "duplicated_output_frames": self.duplicated_output_frames,
            "summary": self.summary(),
        }
        if per_frame:
            d["per_frame"] = {
                name: [json_number(x) for x in self.per_frame[name]] for name in PER_FRAME_FIELDS
            }
        return d


class QualityMeter:
    """Scores frame pairs in output order and keeps the pictures of the worst ones only (at most 2 x WORST
    pairs, made into thumbnails by result())."""

    def __init__(self, width: int, height: int, pix_fmt: str, ssim: str = "fast",
                 thumbnails: bool = True) -> None:
        self.pix_fmt = pix_fmt
        self._comparers: dict[tuple[int, int], FrameComparer] = {}
        self.ssim = ssim
        self.per_frame: dict[str, array] = {
            name: array("l" if name in ("output_frame", "source_frame") else "d")
            for name in PER_FRAME_FIELDS
        }
        self._thumbnails = thumbnails
        # the WORST lowest values so far, as (-value, -frame) min-heaps: the top is the best kept
        self._worst_psnr: list[tuple[float, int]] = []
        self._worst_ssim: list[tuple[float, int]] = []
        # the pictures of the frames kept, made into thumbnails once scoring ends: a frame enters the
        # worst lists every time quality dips below what was kept (tens of times in a 10 s clip), and
        # making its thumbnails then cost more than scoring it (py-spy on a 1080p re-encode)
        self._kept_pictures: dict[int, tuple[av.VideoFrame, av.VideoFrame]] = {}

    def add(self, output_frame: int, source_frame: int, source_pts: float, output_pts: float,
            reference: av.VideoFrame, distorted: av.VideoFrame,
            picture: tuple[int, int, int, int] | None = None) -> FrameScores:
        """Score one pair; `picture` (x, y, w, h) limits it to the picture inside letterbox bars,
        which are identical on both sides and would otherwise inflate every figure."""
        if output_frame != len(self.per_frame["output_frame"]):
            raise DvqaError(f"quality: output frame {output_frame} scored out of order; "
                            "report this as a dvqa bug.")
        if picture and picture[2:] != (reference.width, reference.height):
            reference, distorted = crop(reference, *picture), crop(distorted, *picture)
        size = (reference.width, reference.height)
        if size not in self._comparers:
            self._comparers[size] = FrameComparer(*size, self.pix_fmt, self.ssim)
        scores = self._comparers[size].score(output_frame, reference, distorted)
        row = (output_frame, source_frame, source_pts, output_pts, scores.psnr_y, scores.psnr_cb,
               scores.psnr_cr, scores.psnr, scores.ssim_y)
        for name, value in zip(PER_FRAME_FIELDS, row):
            self.per_frame[name].append(value)
        if self._thumbnails:
            kept = self._keep(self._worst_psnr, scores.psnr_y, output_frame)
            kept |= self._keep(self._worst_ssim, scores.ssim_y, output_frame)
            if kept:
                self._kept_pictures[output_frame] = (reference, distorted)
                wanted = {-k for _, k in self._worst_psnr} | {-k for _, k in self._worst_ssim}
                for k in list(self._kept_pictures):
                    if k not in wanted:
                        del self._kept_pictures[k]
        return scores

    @staticmethod
    def _keep(heap: list[tuple[float, int]], value: float, index: int) -> bool:
        """Keep the WORST lowest values: a heap of (-value, -index) whose top is the best kept."""
        item = (-value, -index)
        if len(heap) < WORST:
            heapq.heappush(heap, item)
            return True
        if item > heap[0]:  # lower value (or equal value, earlier frame) than the best kept
            heapq.heapreplace(heap, item)
            return True
        return False

    def result(self, dropped: int, duplicated: int) -> QualityResult:
        thumbs = {k: make_thumbs(k, *pair) for k, pair in sorted(self._kept_pictures.items())}
        return QualityResult(self.ssim, self.per_frame, dropped, duplicated, thumbs)


@dataclass
class _Expected:
    output_frame: int
    source_frame: int
    source_pts: float
    output_pts: float
    reference: av.VideoFrame
    picture: tuple[int, int, int, int] | None


class WrittenStreamMeter:
    """Decodes the coded bytes as they are written and scores each picture against its reference.

    The bytes given to `written` are exactly those appended to the stream file that
    becomes Pixel Data; convert then checks that the file's fragments hold the same
    bytes. References and decoded pictures are paired in output order, whichever
    arrives first (decoders and encoders delay by different amounts).
    """

    def __init__(self, codec: str, meter: QualityMeter) -> None:
        self._decoder = frame_threaded(av.CodecContext.create(codec, "r"))
        self._meter = meter
        self._expected: deque[_Expected] = deque()
        self._decoded: deque[av.VideoFrame] = deque()
        self.scored = 0

    def expect(self, output_frame: int, source_frame: int, source_pts: float, output_pts: float,
               reference: av.VideoFrame, picture: tuple[int, int, int, int] | None = None) -> None:
        self._expected.append(_Expected(output_frame, source_frame, source_pts, output_pts, reference,
                                        picture))
        self._pair()

    def written(self, data: bytes | None) -> None:
        packet = None
        if data is not None:
            # a packet FFmpeg owns, filled by copy: av.Packet(bytes) lends FFmpeg a Python buffer, whose release
            # needs the GIL - and FFmpeg's frame threads release it while the decoder is freed with the GIL
            # held, so an abandoned decoder deadlocked (seen in a Dask worker, on a damaged recording)
            packet = av.Packet(len(data))
            memoryview(packet)[:] = data
        self._decoded.extend(self._decoder.decode(packet))
        self._pair()

    def _pair(self) -> None:
        while self._expected and self._decoded:
            e, frame = self._expected.popleft(), self._decoded.popleft()
            self._meter.add(e.output_frame, e.source_frame, e.source_pts, e.output_pts, e.reference, frame,
                            e.picture)
            self.scored += 1

    def finish(self) -> None:
        self.written(None)
        if self._expected or self._decoded:
            raise DvqaError(
                f"quality: the written stream decodes to {self.scored + len(self._decoded)} pictures "
                f"for {self.scored + len(self._expected)} output frames; report this as a dvqa bug."
            )

