"""Display order of an H.264 elementary stream's pictures, read from slice headers without decoding.

A raw stream carries no timestamps; with B-pictures the display order differs from the stream order,
and a container (MP4) needs both. The order is the picture order count (ITU-T H.264 §8.2.1), which
the first slice header of each picture carries: for pic_order_cnt_type 0 its LSBs (the MSBs follow
from the previous reference picture), for type 2 it is the stream order. Counting restarts at each
IDR picture. Reading it costs a few bytes per picture, where decoding would cost the whole video.

What this does not follow - pic_order_cnt_type 1, field pictures, memory_management_control_operation
5 (which x264, FFmpeg and browser encoders do not write for frames) - returns None, and the caller
asks the decoder instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvqa.video.h264 import HIGH_PROFILES, _Bits, _rbsp, _skip_scaling_list


@dataclass(frozen=True)
class _Sps:
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    frame_mbs_only: bool
    separate_colour_plane: bool


def _sps(nal: bytes) -> tuple[int, _Sps]:
    bits = _Bits(_rbsp(nal))
    profile = bits.u(8)
    bits.u(16)
    sps_id = bits.ue()
    separate = False
    if profile in HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            separate = bool(bits.u(1))
        bits.ue(), bits.ue(), bits.u(1)
        if bits.u(1):
            for i in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    log2_max_frame_num = bits.ue() + 4
    poc_type = bits.ue()
    log2_max_poc_lsb = 0
    if poc_type == 0:
        log2_max_poc_lsb = bits.ue() + 4
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1), bits.ue(), bits.ue()
    frame_mbs_only = bool(bits.u(1))
    return sps_id, _Sps(log2_max_frame_num, poc_type, log2_max_poc_lsb, frame_mbs_only, separate)


def _pps(nal: bytes) -> tuple[int, int]:
    bits = _Bits(_rbsp(nal[:16]))
    return bits.ue(), bits.ue()


def nal_heads(data: bytes, size: int = 256):
    """The first `size` bytes of each NAL unit of an Annex B access unit, up to the first slice: the
    headers are all that is read, so a large picture is not copied."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0:
        start = at + 3
        at = data.find(b"\x00\x00\x01", start, start + size + 3)
        end = at if at >= 0 else start + size
        yield data[start:end]
        if start < len(data) and data[start] & 0x1F in (1, 5):
            return
        if at < 0:
            at = data.find(b"\x00\x00\x01", start + size)


class PictureOrder:
    """Feed access units in stream order; `order()` gives each one's display position, or None.

    `add` also answers the access unit's sort key (IDR period, picture order count), or None once the
    stream uses what this reader does not follow: a caller that orders the pictures in a sliding window
    (a stream remuxed while it arrives) passes keep=False, and no key is kept."""

    def __init__(self, keep: bool = True) -> None:
        self._sps: dict[int, _Sps] = {}
        self._pps: dict[int, int] = {}
        self._keys: list[tuple[int, int]] = []  # (IDR period, picture order count) per access unit
        self._keep = keep
        self._count = 0
        self._period = -1
        self._prev_msb = self._prev_lsb = 0
        self.failed = False

    def add(self, access_unit: bytes) -> tuple[int, int] | None:
        if self.failed:
            return None
        try:
            for nal in nal_heads(access_unit):
                kind = nal[0] & 0x1F
                if kind == 7:
                    sps_id, sps = _sps(nal)
                    self._sps[sps_id] = sps
                elif kind == 8:
                    pps_id, sps_id = _pps(nal)
                    self._pps[pps_id] = sps_id
                elif kind in (1, 5):
                    key = self._slice(nal, kind == 5)
                    self._count += 1
                    if self._keep:
                        self._keys.append(key)
                    return key
            self.failed = True  # an access unit without a slice: not an order this reader follows
        except (IndexError, ValueError, KeyError):
            self.failed = True
        return None

    def _slice(self, nal: bytes, idr: bool) -> tuple[int, int]:
        ref = nal[0] >> 5 & 3
        bits = _Bits(_rbsp(nal[:64]))
        bits.ue()  # first_mb_in_slice
        bits.ue()  # slice_type
        sps = self._sps[self._pps[bits.ue()]]
        if sps.separate_colour_plane:
            bits.u(2)
        frame_num = bits.u(sps.log2_max_frame_num)
        if not sps.frame_mbs_only and bits.u(1):  # field_pic_flag
            raise ValueError("field pictures")
        if idr:
            bits.ue()  # idr_pic_id
            self._period += 1
            self._prev_msb = self._prev_lsb = 0
        if self._period < 0:
            raise ValueError("the stream does not start with an IDR picture")
        if sps.poc_type == 2:
            return self._period, self._count  # display order is stream order (§8.2.1.3)
        if sps.poc_type != 0:
            raise ValueError("pic_order_cnt_type 1")
        del frame_num
        lsb = bits.u(sps.log2_max_poc_lsb)
        half = 1 << (sps.log2_max_poc_lsb - 1)
        msb = self._prev_msb
        if lsb < self._prev_lsb and self._prev_lsb - lsb >= half:
            msb += 2 * half
        elif lsb > self._prev_lsb and lsb - self._prev_lsb > half:
            msb -= 2 * half
        if ref:
            self._prev_msb, self._prev_lsb = msb, lsb
        return self._period, msb + lsb

    def order(self) -> list[int] | None:
        if self.failed or not self._keys:
            return None
        ranked = sorted(range(len(self._keys)), key=lambda i: self._keys[i])
        position = [0] * len(ranked)
        for shown, index in enumerate(ranked):
            position[index] = shown
        return position
