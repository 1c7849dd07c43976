"""DICOM facts and files: the one transfer-syntax table, value rules (PS3.5), reading a file
defensively, encapsulated Pixel Data, and the video IOD builder."""
