"""Talking to a PACS, as one name for the callers: the work itself is in one module per service.

association.py  peers, TLS, presentation contexts, associations, results, exit codes, audit records
dimse.py        C-ECHO, C-STORE, the fallback copy for a refused file
dicomweb.py     STOW-RS
commitment.py   Storage Commitment Push Model
retrieve.py     C-GET
"""

from dvqa.pacs.association import (DEFAULT_AET, DEFAULT_CALLED_AET, DEFAULT_COMMIT_WAIT, DEFAULT_HOST,  # noqa: F401
                                   DEFAULT_LISTEN_HOST, DEFAULT_RETRIES, DEFAULT_TIMEOUT, EXIT_OF_OUTCOME,
                                   MAX_CONTEXTS, STORED_STATUSES, Context, Peer, StoreInterrupted, StoreResult, Tls,
                                   commitment_contexts, drop_all, echo_contexts, exit_code_of, get_contexts,
                                   send_event, store_contexts)
from dvqa.pacs.commitment import STORAGE_COMMITMENT_INSTANCE, commit  # noqa: F401
from dvqa.pacs.dicomweb import http_session, stow  # noqa: F401
from dvqa.pacs.dimse import echo, identify, store, store_with_fallback  # noqa: F401
from dvqa.pacs.retrieve import get_instance  # noqa: F401
