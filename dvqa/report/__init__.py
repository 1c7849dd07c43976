"""Reports that must be true: generated from what the installed dvqa does and links."""
