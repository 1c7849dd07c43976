"""The source video: probing, the demux-only scan, the timing schedule, the conversion plan,
encoding, H.264 parameter sets, and the frame codes of the reference clips."""
