"""PACS work: DIMSE and DICOMweb transfer, Storage Commitment, fallback copies, the documented PACS
profiles, the simulator and the compatibility matrix."""

from dvqa.core.exports import lazy

__all__ = ["Peer", "StoreResult", "Tls", "echo", "store", "stow"]
__getattr__ = lazy(__name__, {name: "network" for name in __all__})
