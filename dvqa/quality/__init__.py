"""Per-frame quality evidence: PSNR/SSIM, the meter that scores what was written, re-measuring an
existing pair, and the quality reports."""

from dvqa.core.exports import lazy

__all__ = ["QualityMeter", "QualityResult", "measure_files"]
__getattr__ = lazy(__name__, {"QualityMeter": "meter", "QualityResult": "meter", "measure_files": "recheck"})
