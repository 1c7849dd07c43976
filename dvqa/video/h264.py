"""The one H.264 header field dvqa needs that FFmpeg does not expose before decoding: the frame
rate the stream states itself (SPS VUI timing_info, ITU-T H.264 §7.3.2.1.1 and §E.1.1).

A passthrough stream keeps its VUI, and a viewer decoding the raw stream from a DICOM file may
play it at that rate, so it must agree with Frame Time.
"""

from __future__ import annotations

from fractions import Fraction

HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}  # §7.3.2.1.1: chroma info


class _Bits:
    def __init__(self, rbsp: bytes) -> None:
        self.data, self.pos = rbsp, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError at the end: caught by the caller
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("malformed exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL payload without its emulation-prevention bytes (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for byte in nal[1:]:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def sps_frame_rate(nal: bytes) -> Fraction | None:
    """time_scale / (2 * num_units_in_tick) from an SPS NAL unit; None without timing info."""
    try:
        bits = _Bits(_rbsp(nal))
        profile = bits.u(8)
        bits.u(16)  # constraint flags, reserved bits, level_idc
        bits.ue()  # seq_parameter_set_id
        if profile in HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)
            bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if bits.u(1):  # seq_scaling_matrix_present
                for i in range(8 if chroma != 3 else 12):
                    if bits.u(1):
                        _skip_scaling_list(bits, 16 if i < 6 else 64)
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1), bits.se(), bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue(), bits.u(1)  # max_num_ref_frames, gaps_in_frame_num_allowed
        bits.ue(), bits.ue()  # picture size in macroblocks
        if not bits.u(1):  # frame_mbs_only
            bits.u(1)
        bits.u(1)  # direct_8x8_inference
        if bits.u(1):  # frame_cropping
            bits.ue(), bits.ue(), bits.ue(), bits.ue()
        if not bits.u(1):  # vui_parameters_present
            return None
        if bits.u(1) and bits.u(8) == 255:  # aspect_ratio_info, Extended_SAR
            bits.u(32)
        if bits.u(1):  # overscan_info_present
            bits.u(1)
        if bits.u(1):  # video_signal_type_present
            bits.u(4)
            if bits.u(1):
                bits.u(24)
        if bits.u(1):  # chroma_loc_info_present
            bits.ue(), bits.ue()
        if not bits.u(1):  # timing_info_present
            return None
        units, scale = bits.u(32), bits.u(32)
        return Fraction(scale, 2 * units) if units and scale else None
    except (IndexError, ValueError):
        return None
