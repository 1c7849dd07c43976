"""Evidence that holds: DICOM digital signatures, the hash-chained audit trail, ATNA export."""

from dvqa.core.exports import lazy

__all__ = ["AuditLog", "Signer", "sign_file", "verify_file"]
__getattr__ = lazy(__name__, {"AuditLog": "audit", "Signer": "signature", "sign_file": "signature",
                              "verify_file": "verification"})
